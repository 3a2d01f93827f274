package main

import (
	"context"
	"errors"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/natstest"
)

// inProcess is a run() of the worker in this process.
type inProcess struct {
	out    *natstest.Output
	done   chan struct{} // closed when run has returned, err set
	err    error
	cancel context.CancelFunc // SIGTERM
}

// runInProcess starts run(args) with env as its environment; the test's
// end stops it and waits for it.
func runInProcess(t *testing.T, env map[string]string, args ...string) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{out: &natstest.Output{}, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(p.done)
		p.err = run(ctx, args, func(k string) string { return env[k] }, p.out, p.out)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(60 * time.Second):
			t.Errorf("run did not return within 60s of its cancellation")
		}
		if t.Failed() {
			t.Logf("worker output:\n%s", p.out.String())
		}
	})
	return p
}

// exited waits up to d for run to return and returns its error.
func (p *inProcess) exited(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("run did not return within %s", d)
		return nil
	}
}

// waitLog waits up to d until the worker's output holds want.
func waitLog(t *testing.T, out *natstest.Output, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the log did not show %q within %s", want, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// authServer is a NATS server that requires user "orderly" with a password
// and logs into out; restarted on the same address and store, it is the
// same server with other credentials.
func authServer(t *testing.T, addr, dir, password string, out io.Writer) *embedded.Server {
	t.Helper()
	log := zerolog.New(out)
	s, err := embedded.Start(embedded.Config{Listen: addr, DataDir: dir, User: "orderly", Password: password, Logger: &log})
	if err != nil {
		t.Fatalf("start nats-server with password %s: %v", password, err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// hostPort is where srv accepts clients, as host:port.
func hostPort(t *testing.T, srv *embedded.Server) string {
	t.Helper()
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatalf("server URL %q: %v", srv.ClientURL(), err)
	}
	return u.Host
}

// TestCredentialsChangedWhileRunning: the server restarts with another
// password; the worker turns unready but stays alive, keeps trying with
// backoff and says so a few times, not ten times a second; once the old
// password is back, it is ready again within 30s.
func TestCredentialsChangedWhileRunning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var serverLog natstest.Output
	// Port 0: the server picks a free port, which its restarts then reuse.
	srv := authServer(t, "127.0.0.1:0", dir, "password-A", &serverLog)
	natsAddr := hostPort(t, srv)
	w := runInProcess(t, nil, "--nats-url", "nats://"+natsAddr, "--user", "orderly", "--password", "password-A",
		"--http", "127.0.0.1:0", "--log-level", "info", "--reconnect-timeout", "2m")
	base := "http://" + httpAddrOf(t, w.out)
	waitHTTP(t, base+"/readyz", 200, 30*time.Second)

	srv.Shutdown()
	linesBefore := strings.Count(w.out.String(), "\n")
	changed := time.Now()
	srv = authServer(t, natsAddr, dir, "password-B", &serverLog)
	waitHTTP(t, base+"/readyz", 503, 30*time.Second)
	// The worker keeps knocking: the server counts the refusals.
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(serverLog.String(), "authentication error") < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("the server refused %d connections within 60s; the worker gave up reconnecting",
				strings.Count(serverLog.String(), "authentication error"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := natstest.HTTPGet(base + "/healthz"); code != 200 {
		t.Errorf("/healthz %d %q while the credentials are wrong, within --reconnect-timeout: want 200", code, body)
	}
	if code, _ := natstest.HTTPGet(base + "/readyz"); code != 503 {
		t.Errorf("/readyz %d while the credentials are wrong: want 503", code)
	}
	out := w.out.String()
	lines := strings.Count(out, "\n") - linesBefore
	elapsed := time.Since(changed)
	t.Logf("%d refusals, %d worker log lines in %s", strings.Count(serverLog.String(), "authentication error"), lines, elapsed.Round(time.Millisecond))
	if lines > 20 {
		t.Errorf("%d log lines in %s while the credentials were wrong: want a few, rate-limited", lines, elapsed.Round(time.Millisecond))
	}
	// Failed attempts are logged at most once per 15s: if the first one
	// logged was the server still restarting (connection refused), the
	// refusal's line comes with the next.
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(w.out.String(), "NATS refuses our credentials; retrying"); {
		if time.Now().After(deadline) {
			t.Error("the log does not say that the server refuses the credentials")
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The rotation is rolled back.
	srv.Shutdown()
	authServer(t, natsAddr, dir, "password-A", &serverLog)
	waitHTTP(t, base+"/readyz", 200, 30*time.Second)
	if code, _ := natstest.HTTPGet(base + "/healthz"); code != 200 {
		t.Errorf("/healthz %d after the credentials came back", code)
	}
	w.cancel()
	if err := w.exited(t, 60*time.Second); err != nil {
		t.Fatalf("run after SIGTERM: %v", err)
	}
}

// TestCredentialsWrongPastReconnectTimeout: when the credentials stay
// wrong for longer than --reconnect-timeout, /healthz fails and the worker
// exits with an error (exit 1), so that Kubernetes restarts it.
func TestCredentialsWrongPastReconnectTimeout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := authServer(t, "127.0.0.1:0", dir, "password-A", io.Discard)
	natsAddr := hostPort(t, srv)
	const bound = 3 * time.Second
	w := runInProcess(t, nil, "--nats-url", "nats://"+natsAddr, "--user", "orderly", "--password", "password-A",
		"--http", "127.0.0.1:0", "--log-level", "info", "--reconnect-timeout", bound.String(), "--shutdown-timeout", "1s")
	base := "http://" + httpAddrOf(t, w.out)
	waitHTTP(t, base+"/readyz", 200, 30*time.Second)

	srv.Shutdown()
	down := time.Now()
	authServer(t, natsAddr, dir, "password-B", io.Discard)
	unhealthy, body := untilUnhealthy(t, w, base, down)
	if d := unhealthy.Sub(down); d < bound {
		t.Errorf("/healthz failed %s after the server went away, before --reconnect-timeout %s", d, bound)
	}
	if !strings.Contains(body, "reconnect-timeout") {
		t.Errorf("/healthz says %q; want the reason", body)
	}
	err := w.exited(t, 60*time.Second)
	exit := time.Since(down)
	t.Logf("/healthz 503 after %s, run returned after %s: %v", unhealthy.Sub(down).Round(time.Millisecond), exit.Round(time.Millisecond), err)
	var usage *cli.UsageError
	if err == nil || errors.As(err, &usage) {
		t.Fatalf("run returned %v; want an error (exit 1)", err)
	}
	// The bound, one check interval, and the stop (--shutdown-timeout + 5s).
	if limit := bound + time.Second + 6*time.Second + 10*time.Second; exit > limit {
		t.Errorf("exit %s after the server went away; want within %s", exit, limit)
	}
}

// TestConsoleCredentialsWrongPastReconnectTimeout: the web console's own
// connection is watched as the worker's is. When the console's user is
// refused for longer than --reconnect-timeout (its password changed on the
// server), /healthz fails naming the console and the worker exits with an
// error, as it would at start-up with those credentials, rather than run on
// with a console that can no longer act.
func TestConsoleCredentialsWrongPastReconnectTimeout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := rolesServerAt(t, "127.0.0.1:0", dir, "op-secret")
	natsAddr := hostPort(t, srv)
	const bound = 3 * time.Second
	w := runInProcess(t, nil, "--nats-url", "nats://"+natsAddr, "--user", "w", "--password", "w-secret",
		"--console-user", "op", "--console-password", "op-secret",
		"--http", "127.0.0.1:0", "--log-level", "info", "--reconnect-timeout", bound.String(), "--shutdown-timeout", "1s")
	base := "http://" + httpAddrOf(t, w.out)
	waitHTTP(t, base+"/readyz", 200, 30*time.Second)

	srv.Shutdown()
	down := time.Now()
	rolesServerAt(t, natsAddr, dir, "op-changed")
	// The worker's own connection comes back: only the console's stays out.
	waitHTTP(t, base+"/readyz", 200, 30*time.Second)
	unhealthy, body := untilUnhealthy(t, w, base, down)
	if d := unhealthy.Sub(down); d < bound {
		t.Errorf("/healthz failed %s after the server went away, before --reconnect-timeout %s", d, bound)
	}
	if !strings.Contains(body, "web console") || !strings.Contains(body, "reconnect-timeout") {
		t.Errorf("/healthz says %q; want the console's connection named, and the bound", body)
	}
	err := w.exited(t, 60*time.Second)
	t.Logf("/healthz 503 after %s: %v", unhealthy.Sub(down).Round(time.Millisecond), err)
	var usage *cli.UsageError
	if err == nil || errors.As(err, &usage) || !strings.Contains(err.Error(), "web console") {
		t.Fatalf("run returned %v; want an error naming the console's connection (exit 1)", err)
	}
}

// untilUnhealthy probes w's /healthz at base as Kubernetes would, from
// down (when its server went away) until it answers 503, and returns when
// and what it answered; it fails the test if w exits first or if /healthz
// still answers 200 after 60s.
func untilUnhealthy(t *testing.T, w *inProcess, base string, down time.Time) (time.Time, string) {
	t.Helper()
	for {
		select {
		case <-w.done:
			t.Fatalf("run returned %v before /healthz ever failed", w.err)
		case <-time.After(20 * time.Millisecond):
		}
		code, body := natstest.HTTPGet(base + "/healthz")
		if code == 503 {
			return time.Now(), body
		}
		if code != 200 && code != 0 {
			t.Fatalf("/healthz %d %q", code, body)
		}
		if time.Since(down) > 60*time.Second {
			t.Fatalf("/healthz still %d after 60s", code)
		}
	}
}
