package natstest_test

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/internal/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

// fatalOf runs check on a goroutine of its own with a T whose Fatal ends
// only that goroutine, and returns the fatal message ("" if none).
func fatalOf(t *testing.T, check func(t testing.TB)) string {
	t.Helper()
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); check(r) }()
	select {
	case <-done:
	case <-time.After(natstest.Timeout):
		t.Fatalf("the check neither returned nor failed within %s", natstest.Timeout)
	}
	return r.msg
}

type recorder struct {
	testing.TB
	msg string // written before Goexit, read after done is closed
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) {
	r.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

// TestFailInsteadOfHanging: every wait helper returns what came, or fails
// within its bound saying what it waited for and what it saw instead.
func TestFailInsteadOfHanging(t *testing.T) {
	t.Parallel()
	const short = 50 * time.Millisecond

	ch := make(chan int, 4)
	ch <- 7
	if got := natstest.Recv(t, ch, short, "seven"); got != 7 {
		t.Errorf("Recv = %d, want 7", got)
	}
	if msg := fatalOf(t, func(tb testing.TB) { natstest.Recv(tb, ch, short, "the status of k") }); !strings.Contains(msg, "the status of k") || !strings.Contains(msg, "nothing came") {
		t.Errorf("Recv on an empty channel: %q", msg)
	}

	ch <- 1
	ch <- 2
	ch <- 3
	if got := natstest.RecvUntil(t, ch, short, "an even number", func(n int) bool { return n%2 == 0 }); got != 2 {
		t.Errorf("RecvUntil = %d, want 2", got)
	}
	ch <- 5
	msg := fatalOf(t, func(tb testing.TB) {
		natstest.RecvUntil(tb, ch, short, "an even number", func(n int) bool { return n%2 == 0 })
	})
	if !strings.Contains(msg, "an even number") || !strings.Contains(msg, "received instead: 3, 5") {
		t.Errorf("RecvUntil without a match: %q", msg)
	}
	close(ch)
	if msg := fatalOf(t, func(tb testing.TB) {
		natstest.RecvUntil(tb, ch, short, "an even number", func(int) bool { return false })
	}); !strings.Contains(msg, "closed") {
		t.Errorf("RecvUntil on a closed channel: %q", msg)
	}

	quiet := make(chan string, 1)
	natstest.NoRecv(t, quiet, short, "a second status")
	quiet <- "again"
	if msg := fatalOf(t, func(tb testing.TB) { natstest.NoRecv(tb, quiet, short, "a second status") }); !strings.Contains(msg, "a second status") || !strings.Contains(msg, "again") {
		t.Errorf("NoRecv with a value: %q", msg)
	}

	var wg sync.WaitGroup
	release := make(chan struct{})
	wg.Go(func() { <-release }) // released below, before the test ends
	if msg := fatalOf(t, func(tb testing.TB) { natstest.Wait(tb, &wg, short, "the publishers") }); !strings.Contains(msg, "the publishers") {
		t.Errorf("Wait on a stuck group: %q", msg)
	}
	close(release)
	natstest.Wait(t, &wg, natstest.Timeout, "the released goroutine")
}

// TestDeadAddrRefusesAndHoldsItsPort: connections to a DeadAddr are
// refused and no server can take its port; a reserved address is free for
// its server once released.
func TestDeadAddrRefusesAndHoldsItsPort(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("ports are held on Linux only")
	}
	dead := natstest.DeadAddr(t)
	if c, err := net.DialTimeout("tcp", dead, 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("dial %s: %v, want connection refused", dead, err)
	}
	if ln, err := net.Listen("tcp", dead); !errors.Is(err, syscall.EADDRINUSE) {
		if ln != nil {
			ln.Close()
		}
		t.Errorf("listen on %s: %v, want address in use", dead, err)
	}

	addr, release := natstest.ReserveAddr(t)
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("listened on %s while it was reserved", addr)
	}
	release()
	release() // idempotent
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s once released: %v", addr, err)
	}
	ln.Close()
}

// TestLoggedAddr: the address a process logged is found; a log without it
// fails the test with the log.
func TestLoggedAddr(t *testing.T) {
	t.Parallel()
	var out natstest.Output
	fmt.Fprintln(&out, `{"level":"info","message":"start-up: connecting"}`)
	fmt.Fprintln(&out, `{"level":"info","url":"nats://127.0.0.1:4567","message":"start-up: embedded NATS server listening"}`)
	if got := natstest.LoggedAddr(t, &out, "start-up: embedded NATS server listening", "url", time.Second); got != "127.0.0.1:4567" {
		t.Errorf("LoggedAddr = %q", got)
	}
	msg := fatalOf(t, func(tb testing.TB) {
		natstest.LoggedAddr(tb, &out, "start-up: http listening", "addr", 50*time.Millisecond)
	})
	if !strings.Contains(msg, "start-up: http listening") || !strings.Contains(msg, "start-up: connecting") {
		t.Errorf("LoggedAddr without the line: %q", msg)
	}
}
