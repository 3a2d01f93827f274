package memlimit

import (
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"": 0, "0": 0, "536870912": 512 << 20, "512Mi": 512 << 20, "512MiB": 512 << 20,
		"1Gi": 1 << 30, "1GiB": 1 << 30, "500MB": 500e6, "500M": 500e6, "64Ki": 64 << 10,
		"2k": 2000, "100B": 100, " 1Gi ": 1 << 30, "460MiB": 460 << 20,
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "1.5Gi", "Mi", "12XB", "512 mib", "99999999999999999999", "9000000000Ti"} {
		if got, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, got)
		}
	}
	if _, err := Parse("lots"); !errors.Is(err, ErrSyntax) {
		t.Errorf("Parse(lots): %v, want ErrSyntax", err)
	}
	for _, n := range []int64{512 << 20, 1, 1000} {
		if got, err := Parse(Format(n)); err != nil || got != n {
			t.Errorf("Parse(Format(%d)) = %d, %v", n, got, err)
		}
	}
}

// cgroupFS lays out files as /proc/self/cgroup, /proc/self/mountinfo and
// the cgroup mounts they name would be, under a temporary directory, and
// returns the paths of the first two.
func cgroupFS(t *testing.T, cgroup, mountinfo string, files map[string]string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	mountinfo = strings.ReplaceAll(mountinfo, "$ROOT", dir)
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cg, mi := filepath.Join(dir, "cgroup"), filepath.Join(dir, "mountinfo")
	if err := os.WriteFile(cg, []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mi, []byte(mountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	return cg, mi
}

func TestCgroupLimit(t *testing.T) {
	t.Parallel()
	const (
		v2Mount  = "30 23 0:26 / $ROOT/sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
		v1Mounts = "31 23 0:28 / $ROOT/sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu,cpuacct\n" +
			"35 23 0:32 / $ROOT/sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,memory\n"
		other = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
	)
	tests := []struct {
		name      string
		cgroup    string
		mountinfo string
		files     map[string]string
		want      int64
		wantFile  string
	}{{
		name:      "v2 in a container (cgroup namespace)",
		cgroup:    "0::/\n",
		mountinfo: other + v2Mount,
		files:     map[string]string{"sys/fs/cgroup/memory.max": "536870912\n"},
		want:      512 << 20, wantFile: "sys/fs/cgroup/memory.max",
	}, {
		name:      "v2 unlimited",
		cgroup:    "0::/\n",
		mountinfo: v2Mount,
		files:     map[string]string{"sys/fs/cgroup/memory.max": "max\n"},
	}, {
		name:      "v2 on a host: the least limit up the tree",
		cgroup:    "0::/kubepods.slice/pod1/ctr\n",
		mountinfo: v2Mount,
		files: map[string]string{
			"sys/fs/cgroup/kubepods.slice/pod1/ctr/memory.max": "max\n",
			"sys/fs/cgroup/kubepods.slice/pod1/memory.max":     "1073741824\n",
			"sys/fs/cgroup/kubepods.slice/memory.max":          "8589934592\n",
		},
		want: 1 << 30, wantFile: "sys/fs/cgroup/kubepods.slice/pod1/memory.max",
	}, {
		name:      "v1",
		cgroup:    "5:cpu,cpuacct:/\n4:memory:/docker/abc\n1:name=systemd:/\n",
		mountinfo: other + v1Mounts,
		files:     map[string]string{"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "268435456\n"},
		want:      256 << 20, wantFile: "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
	}, {
		name:      "v1 mounted at the container's own cgroup",
		cgroup:    "4:memory:/docker/abc\n",
		mountinfo: "35 23 0:32 /docker/abc $ROOT/sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
		files:     map[string]string{"sys/fs/cgroup/memory/memory.limit_in_bytes": "268435456\n"},
		want:      256 << 20, wantFile: "sys/fs/cgroup/memory/memory.limit_in_bytes",
	}, {
		name:      "v1 unlimited, as the kernel writes it",
		cgroup:    "4:memory:/x\n",
		mountinfo: v1Mounts,
		files:     map[string]string{"sys/fs/cgroup/memory/x/memory.limit_in_bytes": "9223372036854771712\n"},
	}, {
		name:      "hybrid: v2 mounted without the memory controller, v1 memory limited",
		cgroup:    "4:memory:/x\n0::/\n",
		mountinfo: v1Mounts + "41 31 0:38 / $ROOT/sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
		files:     map[string]string{"sys/fs/cgroup/memory/x/memory.limit_in_bytes": "104857600\n"},
		want:      100 << 20, wantFile: "sys/fs/cgroup/memory/x/memory.limit_in_bytes",
	}, {
		name:      "no cgroup mount",
		cgroup:    "0::/\n",
		mountinfo: other,
	}, {
		name:      "garbage in the limit file",
		cgroup:    "0::/\n",
		mountinfo: v2Mount,
		files:     map[string]string{"sys/fs/cgroup/memory.max": "lots\n"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cg, mi := cgroupFS(t, tt.cgroup, tt.mountinfo, tt.files)
			got, file, err := cgroupLimit(cg, mi)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || (tt.wantFile != "" && !strings.HasSuffix(file, tt.wantFile)) {
				t.Errorf("cgroupLimit = %d from %q, want %d from …/%s", got, file, tt.want, tt.wantFile)
			}
		})
	}
	if _, _, err := cgroupLimit(filepath.Join(t.TempDir(), "none"), "/proc/self/mountinfo"); err == nil {
		t.Error("cgroupLimit of a missing file: no error")
	}
}

func TestDetect(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	host, _, _ := cgroupLimit("/proc/self/cgroup", "/proc/self/mountinfo")
	l, err := Detect(env(map[string]string{"GOMEMLIMIT": "1MiB"}))
	if err != nil || l.Bytes != 1<<20 || l.Source != "GOMEMLIMIT" {
		t.Errorf("Detect with GOMEMLIMIT=1MiB: %+v, %v", l, err)
	}
	l, err = Detect(env(nil))
	if err != nil || l.Bytes != host {
		t.Errorf("Detect without GOMEMLIMIT: %+v, %v; this host's cgroup limit is %d", l, err, host)
	}
	if _, err := Detect(env(map[string]string{"GOMEMLIMIT": "a lot"})); err == nil {
		t.Error("Detect with a bad GOMEMLIMIT: no error")
	}
}

func TestSetSoft(t *testing.T) {
	// Not parallel: it sets the process's soft limit (and puts it back).
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if _, ok := SetSoft(512<<20, env(map[string]string{"GOMEMLIMIT": "400MiB"})); ok {
		t.Error("SetSoft overrode a GOMEMLIMIT below 90 % of the limit")
	}
	if _, ok := SetSoft(512<<20, env(map[string]string{"GOMEMLIMIT": "off"})); ok {
		t.Error("SetSoft overrode GOMEMLIMIT=off")
	}
	// A GOMEMLIMIT at the container's whole limit (set from the downward
	// API) is lowered to 90 %.
	whole, ok := SetSoft(512<<20, env(map[string]string{"GOMEMLIMIT": "536870912"}))
	if !ok || whole.Bytes != 483183821 {
		t.Errorf("GOMEMLIMIT at the limit: soft limit %d set=%v, want 90 %% of 512 MiB", whole.Bytes, ok)
	}
	if ok {
		debug.SetMemoryLimit(whole.Previous)
	}
	if _, ok := SetSoft(0, env(nil)); ok {
		t.Error("SetSoft set a soft limit for no limit")
	}
	s, ok := SetSoft(512<<20, env(nil))
	if !ok {
		t.Fatal("SetSoft set nothing")
	}
	defer debug.SetMemoryLimit(s.Previous)
	if got := debug.SetMemoryLimit(-1); got != s.Bytes || s.Bytes != 483183821 {
		t.Errorf("soft limit %d (reported %d), want 90 %% of 512 MiB", got, s.Bytes)
	}
}
