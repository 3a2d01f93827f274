// Package memlimit finds the memory a process may use and tells the Go
// runtime about it: the worker's --memory-limit, its default from
// GOMEMLIMIT or the cgroup's limit, and the runtime's soft limit derived
// from it.
package memlimit

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// ErrSyntax is returned (wrapped) by Parse for a value it cannot read.
var ErrSyntax = errors.New("want bytes, e.g. 536870912, 512Mi, 512MiB, 1Gi or 500MB")

// units maps each suffix Parse accepts to its multiplier: Kubernetes
// quantities (Ki, Mi, k, M, ...), GOMEMLIMIT's (KiB, MiB, ...) and the
// decimal KB, MB, ... with B for bytes.
var units = map[string]int64{
	"": 1, "B": 1,
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
	"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
	"KB": 1e3, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
}

// Parse reads a byte count: a whole number with an optional unit (512Mi,
// 512MiB, 1Gi, 500MB, 536870912). "" and "0" mean no limit and give 0.
func Parse(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	i := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(s)
	}
	mult, ok := units[strings.TrimSpace(s[i:])]
	if i == 0 || !ok {
		return 0, fmt.Errorf("memory limit %q: %w", s, ErrSyntax)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("memory limit %q: out of range", s)
	}
	return n * mult, nil
}

// Format writes n in MiB when it is a whole number of them, else in bytes:
// a value Parse reads back.
func Format(n int64) string {
	if n > 0 && n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + "MiB"
	}
	return strconv.FormatInt(n, 10)
}

// Limit is a memory limit and where it came from.
type Limit struct {
	// Bytes is the limit; 0 means none.
	Bytes int64
	// Source names where Bytes came from (GOMEMLIMIT, a cgroup file), or
	// why there is none.
	Source string
}

// Detect returns the default limit of this process: the lesser of
// GOMEMLIMIT (the Go runtime's soft limit, when set) and the memory limit
// of its cgroup (v2 memory.max, v1 memory.limit_in_bytes); none if neither
// is set.
func Detect(getenv func(string) string) (Limit, error) {
	var best Limit
	if v := getenv("GOMEMLIMIT"); v != "" && v != "off" {
		n, err := Parse(v)
		if err != nil {
			return Limit{}, fmt.Errorf("GOMEMLIMIT: %w", err)
		}
		best = Limit{Bytes: n, Source: "GOMEMLIMIT"}
	}
	n, file, err := cgroupLimit("/proc/self/cgroup", "/proc/self/mountinfo")
	if err != nil {
		// No cgroup to read (not Linux, a sandbox without /proc): no limit
		// from there, which is what the caller gets without one.
		n = 0
	}
	if n > 0 && (best.Bytes == 0 || n < best.Bytes) {
		best = Limit{Bytes: n, Source: file}
	}
	if best.Bytes == 0 {
		best.Source = "none: neither GOMEMLIMIT nor a cgroup memory limit is set"
	}
	return best, nil
}

// SoftLimit is the Go runtime soft limit for a memory limit: 90 % of it.
// The collector works harder as the heap nears it, well before the kernel's
// OOM killer would act at the limit, and the rest is left for what the
// runtime does not count (the binary's pages, C memory).
func SoftLimit(limit int64) int64 { return limit - limit/10 }

// Soft is the runtime soft limit SetSoft set.
type Soft struct {
	Bytes    int64 // the soft limit now in force
	Previous int64 // the one before, for debug.SetMemoryLimit to restore
}

// SetSoft sets the Go runtime's soft memory limit to SoftLimit(limit),
// unless GOMEMLIMIT is below limit (the runtime follows it: headroom chosen
// by the user) or limit is 0. A GOMEMLIMIT at or above limit (Kubernetes
// manifests often set it to the container's whole limit through the
// downward API) is lowered: at the limit itself the collector would act
// only when the OOM killer does. A limit that came from GOMEMLIMIT itself
// is not passed here. It reports whether it set one.
func SetSoft(limit int64, getenv func(string) string) (Soft, bool) {
	if limit <= 0 {
		return Soft{}, false
	}
	soft := SoftLimit(limit)
	if v := getenv("GOMEMLIMIT"); v != "" {
		if n, err := Parse(v); err != nil || n < limit {
			return Soft{}, false
		}
	}
	return Soft{Bytes: soft, Previous: debug.SetMemoryLimit(soft)}, true
}

// unlimited is where cgroup v1 limits start to mean "none": it writes an
// unset limit as the largest page-aligned int64.
const unlimited = 1 << 62

// cgroupLimit reads the memory limit of the cgroup that cgroupFile (a
// /proc/<pid>/cgroup) places the process in, under the mounts listed in
// mountinfoFile (a /proc/<pid>/mountinfo): the least limit on the path from
// its cgroup up to the mount's root, in v2 and v1 hierarchies alike. It
// returns 0 when no limit is set, with the file that set the limit.
func cgroupLimit(cgroupFile, mountinfoFile string) (int64, string, error) {
	groups, err := readCgroups(cgroupFile)
	if err != nil {
		return 0, "", err
	}
	mounts, err := readMounts(mountinfoFile)
	if err != nil {
		return 0, "", err
	}
	var (
		best     int64
		bestFile string
	)
	for _, m := range mounts {
		var path, file string
		switch {
		case m.fstype == "cgroup2":
			p, ok := groups[""]
			if !ok {
				continue
			}
			path, file = p, "memory.max"
		case m.fstype == "cgroup" && m.hasOption("memory"):
			p, ok := groups["memory"]
			if !ok {
				continue
			}
			path, file = p, "memory.limit_in_bytes"
		default:
			continue
		}
		if m.root != "/" && path != m.root && !strings.HasPrefix(path, m.root+"/") {
			// Our cgroup lies outside what is mounted here.
			continue
		}
		dir := filepath.Join(m.point, strings.TrimPrefix(path, m.root))
		// A parent's limit binds too: take the least one up to the mount.
		for {
			if n, ok := readLimit(filepath.Join(dir, file)); ok && (best == 0 || n < best) {
				best, bestFile = n, filepath.Join(dir, file)
			}
			if dir == m.point || !strings.HasPrefix(dir, m.point) {
				break
			}
			dir = filepath.Dir(dir)
		}
	}
	return best, bestFile, nil
}

// readLimit reads one limit file: a number of bytes, "max" (v2) or a value
// past unlimited (v1) meaning none.
func readLimit(file string) (int64, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	v := strings.TrimSpace(string(b))
	if v == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n >= unlimited {
		return 0, false
	}
	return n, true
}

// readCgroups maps each controller of a /proc/<pid>/cgroup file to the
// process's cgroup path in its hierarchy; "" is the v2 hierarchy.
func readCgroups(file string) (map[string]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	groups := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			groups[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			groups[c] = parts[2]
		}
	}
	return groups, s.Err()
}

type mount struct {
	root, point, fstype string
	options             []string // the super options
}

func (m mount) hasOption(o string) bool {
	for _, x := range m.options {
		if x == o {
			return true
		}
	}
	return false
}

// readMounts reads the cgroup mounts of a /proc/<pid>/mountinfo file.
func readMounts(file string) ([]mount, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []mount
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent major:minor root mount-point options [optional...] - fstype source super-options
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 3 || (b[0] != "cgroup" && b[0] != "cgroup2") {
			continue
		}
		mounts = append(mounts, mount{
			root: unescape(a[3]), point: unescape(a[4]), fstype: b[0],
			options: strings.Split(b[2], ","),
		})
	}
	return mounts, s.Err()
}

// unescape undoes mountinfo's octal escapes of space, tab, newline and
// backslash.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// Flag is a command-line flag of a byte count, read with Parse: a
// flag.Value and a pflag.Value.
type Flag struct{ Bytes int64 }

func (f *Flag) String() string {
	if f == nil || f.Bytes == 0 {
		return ""
	}
	return Format(f.Bytes)
}

// Set parses s with Parse.
func (f *Flag) Set(s string) error {
	n, err := Parse(s)
	if err != nil {
		return err
	}
	f.Bytes = n
	return nil
}

// Type names the flag's values in usage messages.
func (f *Flag) Type() string { return "bytes" }
