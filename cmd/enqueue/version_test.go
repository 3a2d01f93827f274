package main

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/orderly-dev/orderly/internal/natstest"
)

func TestVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--version"}, {"status", "k", "--version"}} {
		out, errOut, code := runCLI(t, context.Background(), args...)
		if code != 0 || errOut != "" {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
		}
		if !strings.HasPrefix(out, "enqueue ") || !strings.Contains(out, "revision ") || !strings.Contains(out, runtime.Version()) {
			t.Errorf("%v: %q, want the name, version, revision and %s", args, out, runtime.Version())
		}
	}
}

// TestConnectTimeoutFlag: enqueue keeps trying an absent server for its
// shorter --connect-timeout (2s), says so, and refuses a negative one.
func TestConnectTimeoutFlag(t *testing.T) {
	t.Parallel()
	url := "nats://" + natstest.DeadAddr(t)
	_, errOut, code := runCLI(t, context.Background(), "--nats-url", url, "k", "e")
	if code != 1 || !strings.Contains(errOut, "no NATS server reachable within 2s") {
		t.Errorf("default: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = runCLI(t, context.Background(), "--nats-url", url, "--connect-timeout", "-1s", "k", "e")
	if code != 2 || !strings.Contains(errOut, "--connect-timeout") {
		t.Errorf("negative: exit %d, stderr %q", code, errOut)
	}
}
