package natstest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Timeout bounds one awaited event in a test: generous, because the tests
// run on machines that may be loaded, and finite, so that an event that
// never comes fails the test with what it waited for instead of hanging
// until CI's limit.
const Timeout = 30 * time.Second

// Recv returns the next value from ch (or ch's zero value once ch is
// closed, as a bare receive does), and fails t naming what it waited for
// if nothing comes within d.
func Recv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("waited %s for %s: nothing came", d, what)
		panic("unreachable")
	}
}

// RecvUntil receives from ch until a value for which want is true and
// returns it, and fails t if none comes within d, listing the values it
// received instead.
func RecvUntil[T any](t testing.TB, ch <-chan T, d time.Duration, what string, want func(T) bool) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	var seen []T
	for {
		select {
		case v, ok := <-ch:
			if !ok {
				t.Fatalf("waiting for %s: the channel closed; received instead: %s", what, list(seen))
			}
			if want(v) {
				return v
			}
			seen = append(seen, v)
		case <-timer.C:
			t.Fatalf("waited %s for %s; received instead: %s", d, what, list(seen))
			panic("unreachable")
		}
	}
}

// NoRecv fails t if ch yields a value within d: a negative check, which
// has no event to await, so it costs d.
func NoRecv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		t.Fatalf("%s: received %+v", what, v)
	case <-timer.C:
	}
}

// Wait waits for wg, and fails t naming what it waited for if wg is not
// done within d. (The goroutine that waits for wg then outlives the test,
// which fails anyway.)
func Wait(t testing.TB, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Fatalf("waited %s for %s: still running", d, what)
	}
}

func list[T any](vs []T) string {
	if len(vs) == 0 {
		return "nothing"
	}
	var b strings.Builder
	for i, v := range vs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%+v", v)
	}
	return b.String()
}
