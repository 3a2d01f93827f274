package main

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/orderly-dev/orderly/internal/buildinfo"
	"github.com/orderly-dev/orderly/internal/natstest"
)

// testLDFlags stamp the test binaries as the Makefile and the Dockerfile
// stamp real ones.
const testLDFlags = "-X github.com/orderly-dev/orderly/internal/buildinfo.version=v9.8.7-test " +
	"-X github.com/orderly-dev/orderly/internal/buildinfo.revision=0123456789abcdef"

// TestVersion: --version prints the module version, VCS revision and Go
// version, the linker's when a build sets them, and /metrics says the same
// in orderly_build_info.
func TestVersion(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	// ORDERLY_VERSION is someone else's variable: it does not ask for the
	// version.
	if err := run(context.Background(), []string{"--version"}, func(k string) string { return map[string]string{"ORDERLY_VERSION": "1"}[k] }, &out, &out); err != nil {
		t.Fatal(err)
	}
	if want := "worker " + buildinfo.Get().String() + "\n"; out.String() != want {
		t.Errorf("run --version: %q, want %q", out.String(), want)
	}

	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	want := "v9.8.7-test (revision 0123456789abcdef, " + runtime.Version() + ")\n"
	for _, bin := range []string{"worker", "enqueue"} {
		got, err := exec.Command(filepath.Join(dir, bin), "--version").Output()
		if err != nil || string(got) != bin+" "+want {
			t.Errorf("%s --version: %q %v, want %q", bin, got, err, bin+" "+want)
		}
	}

	w := startWorker(t, t.TempDir())
	code, body := natstest.HTTPGet("http://" + w.httpAddr + "/metrics")
	series := `orderly_build_info{goversion="` + runtime.Version() + `",revision="0123456789abcdef",version="v9.8.7-test"} 1`
	if code != 200 || !strings.Contains(body, series) {
		t.Errorf("/metrics %d lacks %s", code, series)
	}
}
