package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// startBinary runs the worker binary with args and does not wait for it to
// be ready; the test's end kills it.
func startBinary(t *testing.T, args ...string) *proc {
	t.Helper()
	return startBinaryEnv(t, nil, args...)
}

// startBinaryEnv is startBinary with env (NAME=value) for the environment.
func startBinaryEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "worker"), args...)
	cmd.Env = append([]string{}, env...) // no NATS_URL or ORDERLY_* from the test's environment
	p := &proc{cmd: cmd, out: &natstest.Output{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("worker %v output:\n%s", args, p.out.String())
		}
	})
	return p
}

// exitCode waits up to d for the process to exit and returns its status.
func (p *proc) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		t.Fatalf("no exit within %s\n%s", d, p.out.String())
	}
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return exit.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// TestLaptopTraps: the ways a first run on a laptop went wrong silently or
// late, each now said at once.
func TestLaptopTraps(t *testing.T) {
	t.Parallel()

	// (a) NATS_URL exported for the nats CLI: the log says where the URL
	// came from and that --listen and --data-dir are ignored.
	t.Run("nats_url_from_environment", func(t *testing.T) {
		t.Parallel()
		srv := natstest.Server(t)
		dataDir := filepath.Join(t.TempDir(), "data")
		w := runInProcess(t, map[string]string{"NATS_URL": srv.ClientURL()},
			"--listen", "127.0.0.1:-1", "--data-dir", dataDir, "--http", "127.0.0.1:0")
		waitHTTP(t, "http://"+httpAddrOf(t, w.out)+"/readyz", 200, 30*time.Second)
		out := w.out.String()
		for _, want := range []string{`"from":"NATS_URL"`, "no embedded NATS server", "--listen is ignored", "--data-dir is ignored"} {
			if !strings.Contains(out, want) {
				t.Errorf("the log lacks %q", want)
			}
		}
		if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("--data-dir %s was created (%v) though no embedded server runs", dataDir, err)
		}
	})

	// (b) No server: the first connect gives up after --connect-timeout
	// (the worker's default is 30s) with a clear error; 0 waits.
	t.Run("connect_timeout", func(t *testing.T) {
		t.Parallel()
		if def := flags("worker", &options{}).Lookup("connect-timeout").DefValue; def != "30s" {
			t.Errorf("--connect-timeout defaults to %s, want 30s", def)
		}
		url := "nats://" + natstest.DeadAddr(t)
		began := time.Now()
		w := runInProcess(t, nil, "--nats-url", url, "--connect-timeout", "1s", "--http", "127.0.0.1:0")
		err := w.exited(t, 30*time.Second)
		if !errors.Is(err, queue.ErrNoServer) || !strings.Contains(err.Error(), "within 1s") || !strings.Contains(err.Error(), url) {
			t.Fatalf("after --connect-timeout 1s: %v", err)
		}
		t.Logf("gave up after %s: %v", time.Since(began).Round(time.Millisecond), err)

		// --connect-timeout 0: still waiting well past 1s, then a server
		// comes, at the address the worker was given, and the worker gets
		// ready.
		natsAddr, releaseNATS := natstest.ReserveAddr(t)
		defer releaseNATS()
		w = runInProcess(t, nil, "--nats-url", "nats://"+natsAddr, "--connect-timeout", "0", "--http", "127.0.0.1:0")
		waitLog(t, w.out, "NATS not reachable yet", 30*time.Second)
		select {
		case <-w.done:
			t.Fatalf("--connect-timeout 0 gave up: %v", w.err)
		case <-time.After(3 * time.Second): // nothing to await: it must not end
		}
		releaseNATS()
		srv := startAuthless(t, natsAddr)
		defer srv()
		waitHTTP(t, "http://"+httpAddrOf(t, w.out)+"/readyz", 200, 30*time.Second)
	})

	// (c) The NATS port is taken: reported at once, with its cause, in one
	// line; (g) on loopback without credentials, no warning.
	t.Run("nats_port_in_use", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		began := time.Now()
		w := runInProcess(t, nil, "--listen", ln.Addr().String(), "--data-dir", t.TempDir(), "--http", "127.0.0.1:0")
		err = w.exited(t, 30*time.Second)
		took := time.Since(began)
		var usage *cli.UsageError
		if err == nil || errors.As(err, &usage) || !strings.Contains(err.Error(), "address already in use") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("NATS port taken: %v; want one line with the cause", err)
		}
		if took > 5*time.Second {
			t.Errorf("reported after %s; want at once", took)
		}
		if strings.Contains(w.out.String(), "open to the network") {
			t.Error("warned of an open server on loopback")
		}
	})

	// (d) Two workers on one --data-dir: the second fails at once; the lock
	// dies with its holder, even by SIGKILL.
	t.Run("data_dir_locked", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		first := startWorker(t, dir)
		second := startBinary(t, "--listen", "127.0.0.1:-1", "--http", "127.0.0.1:0", "--data-dir", dir)
		if code := second.exitCode(t, 30*time.Second); code != 1 || !strings.Contains(second.out.String(), "data dir in use") {
			t.Fatalf("second worker on %s: exit %d\n%s", dir, code, second.out.String())
		}
		if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		natstest.Recv(t, first.exited, natstest.Timeout, "the first worker to die of SIGKILL")
		startWorker(t, dir)
	})

	// (e) Every bad flag value is a usage error (exit 2), never a panic.
	t.Run("bad_flag_values", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			args []string
			env  map[string]string
		}{
			{args: []string{"--payment-timeout=-1s"}},
			{args: []string{"--payment-timeout=0s"}},
			{args: []string{"--payment-reminder=-1s"}},
			{args: []string{"--payment-reminder=500ms"}},
			{args: []string{"--payment-reminder=1.5s"}},
			{args: []string{"--connect-timeout=-1s"}},
			{args: []string{"--reconnect-timeout=-1s"}},
			{args: []string{"--sim-latency=-1ms"}},
			{args: []string{"--sim-fail-rate=NaN"}},
			{args: []string{"--sim-fail-rate=1.5"}},
			{args: []string{"--sim-fail-rate=-0.1"}},
			{args: []string{"--queue-limit=0"}},
			{args: []string{"--queue-limit=-1"}},
			{args: []string{"--partitions=0"}},
			{args: []string{"--partitions=2000"}},
			{args: []string{"--replicas=0"}},
			{args: []string{"--replicas=6"}},
			{args: []string{"--batch=0"}},
			{args: []string{"--batch=-1"}},
			{args: []string{fmt.Sprintf("--batch=%d", maxBatch+1)}},
			{args: []string{"--concurrency=0"}},
			{args: []string{"--action-timeout=-1s"}},
			{args: []string{"--action-retries=-1"}},
			{args: []string{"--actor-idle=0s"}},
			{args: []string{"--max-actors=0"}},
			{args: []string{"--shutdown-timeout=0s"}},
			{args: []string{"--shutdown-timeout=-1s"}},
			{args: []string{"--log-level=loud"}},
			{args: []string{"--listen=nonsense"}},
			{args: []string{"--listen=127.0.0.1:99999"}},
			{args: []string{"--listen=:abc"}},
			{args: []string{"--http=nonsense"}},
			{args: []string{"--http=127.0.0.1:-5"}},
			{args: []string{"--data-dir="}},
			{args: []string{"--id=a b"}},
			{args: []string{"--id=a:b"}},
			{args: []string{"--batch=x"}},
			{env: map[string]string{"ORDERLY_BATCH": "0"}},
			{env: map[string]string{"ORDERLY_PAYMENT_TIMEOUT": "-1s"}},
			{env: map[string]string{"ORDERLY_SIM_FAIL_RATE": "NaN"}},
		} {
			name := strings.Join(c.args, " ") + fmt.Sprint(c.env)
			err := func() (err error) {
				defer func() {
					if r := recover(); r != nil {
						err = fmt.Errorf("panic: %v", r)
					}
				}()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				// Were a value to get through, the worker would start: keep it
				// off the usual ports.
				args := append([]string{"--listen", "127.0.0.1:-1", "--http", "127.0.0.1:0", "--data-dir", t.TempDir()}, c.args...)
				var out natstest.Output
				return run(ctx, args, func(k string) string { return c.env[k] }, &out, &out)
			}()
			var usage *cli.UsageError
			if !errors.As(err, &usage) {
				t.Errorf("%s: %v; want a usage error", name, err)
			}
		}
		// The binary: exit 2 and one line, no stack trace.
		p := startBinary(t, "--payment-timeout=-1s")
		if code := p.exitCode(t, 30*time.Second); code != 2 || strings.Contains(p.out.String(), "goroutine") ||
			strings.Count(strings.TrimSpace(p.out.String()), "\n") != 0 {
			t.Errorf("--payment-timeout=-1s: exit %d\n%s", code, p.out.String())
		}
	})

	// (f) SIGTERM during the first connect: exit 0, at once.
	t.Run("sigterm_during_first_connect", func(t *testing.T) {
		t.Parallel()
		p := startBinary(t, "--nats-url", "nats://"+natstest.DeadAddr(t), "--connect-timeout", "0", "--http", "127.0.0.1:0")
		waitLog(t, p.out, "NATS not reachable yet", 30*time.Second)
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.exitCode(t, 10*time.Second); code != 0 {
			t.Errorf("SIGTERM during the first connect: exit %d", code)
		}
	})

	// (g) An embedded server open to the network without credentials
	// warns. The address is a documentation one, not on this machine: the
	// start fails after the warning, and nothing is ever open.
	t.Run("open_listen_warning", func(t *testing.T) {
		t.Parallel()
		w := runInProcess(t, nil, "--listen", "192.0.2.1:4222", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0")
		if err := w.exited(t, 30*time.Second); err == nil {
			t.Fatal("started on 192.0.2.1")
		}
		if !strings.Contains(w.out.String(), "open to the network without authentication") {
			t.Errorf("no warning:\n%s", w.out.String())
		}
	})
}

// startAuthless starts a server without authentication on addr and returns
// its stop function.
func startAuthless(t *testing.T, addr string) func() {
	t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: addr, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s.Shutdown
}
