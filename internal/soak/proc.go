package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// proc is one child process the soak runs, stops and starts again: a NATS
// node or a worker. Its output goes to a log file of its own, appended to
// on each start. An exit the soak did not ask for is reported to onExit.
type proc struct {
	name    string
	bin     string
	args    func() []string // read at each start: a node's flags can change between starts
	logPath string
	onExit  func(name string, err error, logTail string)

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when the running process has exited
	expected bool          // the soak signalled it: its exit is no surprise
	starts   int

	held atomic.Bool // a fault holds it down: the supervisor leaves it
}

// start starts the process; it must not be running.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s: already running", p.name)
		}
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "==== soak: start %d of %s at %s\n", p.starts+1, p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args()...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", p.name, err)
	}
	p.starts++
	p.cmd, p.expected = cmd, false
	done := make(chan struct{})
	p.done = done
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		expected := p.expected
		p.mu.Unlock()
		close(done)
		if !expected && p.onExit != nil {
			p.onExit(p.name, err, tail(p.logPath, 4096))
		}
	}()
	return nil
}

// running reports whether the process is up.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the running process, marking its exit as expected,
// and returns a channel closed when it has exited (closed already if it was
// not running).
func (p *proc) signal(sig syscall.Signal) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	p.expected = true
	_ = p.cmd.Process.Signal(sig)
	return p.done
}

// stop ends the process: sig, then SIGKILL if it has not exited within
// grace. It returns false if SIGKILL was needed.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) bool {
	done := p.signal(sig)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	}
	<-p.signal(syscall.SIGKILL)
	return false
}

// tail returns up to n bytes from the end of the file at path.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	return string(b)
}

// waitHTTP polls url until it answers 200 or ctx ends.
func waitHTTP(ctx context.Context, url string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready (%s): %w", url, last, ctx.Err())
		case <-time.After(200 * time.Millisecond): // a server coming up has no event to wait on
		}
	}
}
