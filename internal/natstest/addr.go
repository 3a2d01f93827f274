package natstest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Servers in tests pick their own ports and say which (port -1 or 0, then
// ClientURL or the log), so that no test guesses a free port that another
// process may take before the server binds it. The helpers below are for
// the two cases where an address must be known before anything listens on
// it: a client pointed at an address where nothing answers, and a server
// that starts later at an address given in advance (nats-server cannot be
// handed a listener).

// DeadAddr returns a loopback host:port that refuses every connection
// until the test ends: a socket bound to it, never listening, holds the
// port, so no server can take it meanwhile.
func DeadAddr(t testing.TB) string {
	t.Helper()
	addr, release := ReserveAddr(t)
	t.Cleanup(release)
	return addr
}

// ReserveAddr returns a loopback host:port that refuses connections and
// that no other socket can bind until release (idempotent) is called; the
// server meant for it starts right after release, so the port is free for
// the few microseconds between the two only.
func ReserveAddr(t testing.TB) (addr string, release func()) {
	t.Helper()
	addr, release, err := reserve()
	if err != nil {
		t.Fatalf("reserve a loopback port: %v", err)
	}
	return addr, release
}

// LoggedAddr waits up to d for the JSON log line in out whose message
// begins with msg and returns the value of its field key (without a
// nats:// scheme): where a process told to pick
// its own port (--http 127.0.0.1:0, --listen 127.0.0.1:-1) listens. It fails
// with the output seen if no such line comes.
func LoggedAddr(t testing.TB, out *Output, msg, key string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		for line := range strings.Lines(out.String()) {
			var l map[string]any
			if json.Unmarshal([]byte(line), &l) != nil {
				continue
			}
			if m, _ := l["message"].(string); !strings.HasPrefix(m, msg) {
				continue
			}
			if v, ok := l[key].(string); ok && v != "" {
				return strings.TrimPrefix(v, "nats://")
			}
			t.Fatalf("the log line %q has no %q: %s", msg, key, line)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q within %s; the log:\n%s", msg, d, out.String())
		}
		time.Sleep(20 * time.Millisecond) // a log line is no event to wait on
	}
}
