package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitHTTP polls url until it answers want: readiness has no event to wait on.
func waitHTTP(t *testing.T, url string, want int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for httpStatus(url) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d within %s", url, want, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func noenv(string) string { return "" }

func TestReadyzOnlyAfterStartUp(t *testing.T) {
	t.Parallel()
	// NATS comes after the worker, at the address it was given.
	natsAddr, releaseNATS := natstest.ReserveAddr(t)
	defer releaseNATS()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var stderr natstest.Output
	go func() {
		done <- run(ctx, []string{"--nats-url", "nats://" + natsAddr, "--http", "127.0.0.1:0", "--log-level", "debug", "--connect-timeout", "0"}, noenv, &stderr, &stderr)
	}()
	httpAddr := httpAddrOf(t, &stderr)
	// No NATS yet: alive, not ready.
	waitHTTP(t, "http://"+httpAddr+"/healthz", 200, 5*time.Second)
	if code := httpStatus("http://" + httpAddr + "/readyz"); code != 503 {
		t.Fatalf("readyz before start-up: %d", code)
	}
	releaseNATS()
	srv, err := embedded.Start(embedded.Config{Listen: natsAddr, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	waitHTTP(t, "http://"+httpAddr+"/readyz", 200, 20*time.Second)
	cancel()
	if err := natstest.Recv(t, done, natstest.Timeout, "run to return after its cancellation"); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	for _, step := range []string{"start-up: connecting", "start-up: provisioning", "start-up: joining the group", "partitions owned", "start-up: ready"} {
		if !strings.Contains(stderr.String(), step) {
			t.Errorf("log lacks %q", step)
		}
	}
}

// TestListenersPickTheirPortsAndLogThem: told port -1 (--listen) and 0
// (--http), the worker's embedded server and its HTTP server each pick a
// free port, and the log says which, so that nobody (a test, a laptop with
// several workers) has to guess a free port first.
func TestListenersPickTheirPortsAndLogThem(t *testing.T) {
	t.Parallel()
	w := runInProcess(t, nil, "--listen", "127.0.0.1:-1", "--http", "127.0.0.1:0", "--data-dir", t.TempDir(), "--partitions", "2")
	natsAddr, httpAddr := natsAddrOf(t, w.out), httpAddrOf(t, w.out)
	for _, addr := range []string{natsAddr, httpAddr} {
		if host, port, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" || port == "0" || port == "-1" {
			t.Fatalf("logged address %q (%v): want 127.0.0.1 and the port picked", addr, err)
		}
	}
	waitHTTP(t, "http://"+httpAddr+"/readyz", 200, 30*time.Second)
	// The logged NATS address is the worker's own server: its stream is there.
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Timeout)
	defer cancel()
	if _, err := natstest.Conn(t, "nats://"+natsAddr).Info(ctx, "order"); err != nil {
		t.Fatalf("the order workflow at the logged NATS address %s: %v", natsAddr, err)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	for _, args := range [][]string{{"--nope"}, {"extra"}, {"--sim-fail-rate", "2"}, {"graph", "--format", "png"}, {"--log-level", "loud"}} {
		err := run(context.Background(), args, noenv, &out, &out)
		var usage interface{ Unwrap() error }
		if !errors.As(err, &usage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

func TestEnvironmentSetsFlags(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	env := map[string]string{"ORDERLY_SIM_FAIL_RATE": "3"}
	err := run(context.Background(), nil, func(k string) string { return env[k] }, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "sim-fail-rate") {
		t.Fatalf("ORDERLY_SIM_FAIL_RATE=3: %v", err)
	}
}

func TestGraph(t *testing.T) {
	t.Parallel()
	for format, want := range map[string]string{"mermaid": "stateDiagram-v2", "dot": "digraph"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"graph", "--format", format}, noenv, &out, &out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "awaiting_payment") {
			t.Errorf("%s: %s", format, out.String())
		}
	}
}

// binaries builds worker and enqueue once per test binary.
var binaries = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "orderly-bin")
	if err != nil {
		return "", err
	}
	out, err := exec.Command("go", "build", "-ldflags", testLDFlags, "-o", dir+string(os.PathSeparator), "github.com/orderly-dev/orderly/cmd/worker", "github.com/orderly-dev/orderly/cmd/enqueue").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return dir, nil
})

type proc struct {
	cmd    *exec.Cmd
	out    *natstest.Output
	exited chan struct{} // closed when the process has exited, err set
	err    error
	// Where it listens (host:port), as its log says: set by startWorker.
	natsAddr, httpAddr string
}

// startWorker runs the worker binary with its embedded server on dataDir,
// each of its listeners on a port it picks, and waits until it is ready.
func startWorker(t *testing.T, dataDir string, extra ...string) *proc {
	t.Helper()
	p := startBinary(t, append([]string{"--listen", "127.0.0.1:-1", "--http", "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "info"}, extra...)...)
	p.natsAddr, p.httpAddr = natsAddrOf(t, p.out), httpAddrOf(t, p.out)
	waitHTTP(t, "http://"+p.httpAddr+"/readyz", 200, 30*time.Second)
	return p
}

// httpAddrOf is where a worker given --http with port 0 serves /healthz,
// /readyz and /metrics, as its log says.
func httpAddrOf(t *testing.T, out *natstest.Output) string {
	t.Helper()
	return natstest.LoggedAddr(t, out, "start-up: http listening", "addr", natstest.Timeout)
}

// natsAddrOf is where the embedded server of a worker given --listen with
// port -1 accepts clients, as its log says.
func natsAddrOf(t *testing.T, out *natstest.Output) string {
	t.Helper()
	return natstest.LoggedAddr(t, out, "start-up: embedded NATS server listening", "url", natstest.Timeout)
}

func enqueue(t *testing.T, natsAddr string, args ...string) (string, int) {
	t.Helper()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "enqueue"), append(args, "--nats-url", "nats://"+natsAddr)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

func TestEndToEndBinaries(t *testing.T) {
	t.Parallel()
	natsAddr := startWorker(t, t.TempDir(), "--sim-latency", "5ms").natsAddr

	for _, step := range []struct{ event, state string }{
		{"start_processing", "processing"}, {"request_payment", "awaiting_payment"}, {"confirm_payment", "completed"},
	} {
		out, code := enqueue(t, natsAddr, "order-1", step.event, "--wait")
		if code != 0 || !strings.Contains(out, step.state) {
			t.Fatalf("%s: exit %d\n%s", step.event, code, out)
		}
	}
	out, code := enqueue(t, natsAddr, "status", "order-1", "--json")
	var st struct {
		Key, State string
		Version    uint64
		Data       json.RawMessage
		UpdatedAt  time.Time `json:"updated_at"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.Key != "order-1" || st.State != "completed" || st.Version != 6 || st.UpdatedAt.IsZero() {
		t.Fatalf("status: exit %d %s", code, out)
	}
	out, code = enqueue(t, natsAddr, "order-2", "confirm_payment", "--wait")
	if code != 1 || !strings.Contains(out, contract.CodeInvalidTransition) {
		t.Fatalf("rejected event: exit %d\n%s", code, out)
	}
	// A quick burst without --wait is applied in order: each event waits
	// for the previous one's slow work.
	for _, ev := range []string{"start_processing", "request_payment"} {
		if _, code := enqueue(t, natsAddr, "order-3", ev); code != 0 {
			t.Fatalf("%s: exit %d", ev, code)
		}
	}
	out, code = enqueue(t, natsAddr, "order-3", "confirm_payment", "--wait")
	if code != 0 || !strings.Contains(out, "completed") {
		t.Fatalf("burst: exit %d\n%s", code, out)
	}
}

func TestSigtermLosesNoAcknowledgedEvent(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	w := startWorker(t, dataDir, "--sim-latency", "1ms")

	conn := natstest.Client(t, "nats://"+w.natsAddr)
	var acked []string
	stopped := make(chan struct{})
	published := make(chan struct{})
	stopPublishing := sync.OnceFunc(func() {
		close(stopped)
		natstest.Recv(t, published, natstest.Timeout, "the publisher to stop")
	})
	t.Cleanup(stopPublishing)
	go func() {
		defer close(published)
		for i := 0; ; i++ {
			key := fmt.Sprintf("sig-%d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := conn.Publish(ctx, "order", key, contract.Envelope{Event: "start_processing"})
			cancel()
			if err == nil {
				acked = append(acked, key)
			}
			select {
			case <-stopped:
				return
			default:
			}
			if i == 200 {
				_ = w.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
	}()
	select {
	case <-w.exited:
		if w.err != nil {
			t.Fatalf("worker exit: %v\n%s", w.err, w.out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("worker did not exit after SIGTERM")
	}
	stopPublishing()
	conn.Close()
	if len(acked) < 200 {
		t.Fatalf("only %d acknowledged", len(acked))
	}

	w2 := startWorker(t, dataDir, "--sim-latency", "1ms")
	conn2 := natstest.Client(t, "nats://"+w2.natsAddr)
	deadline := time.Now().Add(60 * time.Second)
	for _, key := range acked {
		for {
			rec, err := conn2.State(context.Background(), "order", key)
			if err == nil && rec.State == "processing" && rec.Version == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %+v %v: an acknowledged event was lost", key, rec, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestReadmeDiagramMatchesGraph(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- diagram:begin -->")
	block, _, ok2 := strings.Cut(rest, "<!-- diagram:end -->")
	if !ok || !ok2 {
		t.Fatal("README.md lacks the diagram markers")
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"graph"}, noenv, &out, &out); err != nil {
		t.Fatal(err)
	}
	want := "\n```mermaid\n" + out.String() + "```\n"
	if block != want {
		t.Fatalf("README.md's diagram drifted from `worker graph`; paste this between the markers:\n%s", want)
	}
}

func TestCredentialsNeverLogged(t *testing.T) {
	t.Parallel()
	natsAddr := natstest.DeadAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stderr natstest.Output
	env := map[string]string{"ORDERLY_PASSWORD": "flag-secret-2", "ORDERLY_TOKEN": "token-secret-3"}
	go func() {
		done <- run(ctx, []string{"--nats-url", "nats://alice:url-secret-1@" + natsAddr, "--http", "127.0.0.1:0",
			"--log-level", "trace", "--connect-timeout", "200ms"}, func(k string) string { return env[k] }, &stderr, &stderr)
	}()
	// Let it try, fail and log its retries, then stop it.
	waitLog(t, &stderr, "NATS not reachable yet", natstest.Timeout)
	cancel()
	natstest.Recv(t, done, natstest.Timeout, "run to return after its cancellation")
	out := stderr.String()
	if !strings.Contains(out, "connecting to NATS") {
		t.Fatalf("no connection log:\n%s", out)
	}
	for _, secret := range []string{"url-secret-1", "flag-secret-2", "token-secret-3", "alice"} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds %q:\n%s", secret, out)
		}
	}
}

// TestMemoryLimitFlag: --memory-limit (or ORDERLY_MEMORY_LIMIT, or by
// default GOMEMLIMIT) sizes the worker and sets the runtime's soft limit;
// explicit bounds that cannot fit are warned of; a bad value is a usage
// error.
func TestMemoryLimitFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{args: []string{"--memory-limit", "12XB"}},
		{args: []string{"--memory-limit", "-1"}},
		{env: map[string]string{"ORDERLY_MEMORY_LIMIT": "lots"}},
		{env: map[string]string{"GOMEMLIMIT": "lots"}},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tc.args, func(k string) string { return tc.env[k] }, &out, &out)
		var usage interface{ Unwrap() error }
		if !errors.As(err, &usage) || !strings.Contains(err.Error(), "lots") && !strings.Contains(err.Error(), "memory-limit") {
			t.Errorf("%v %v: %v, want a usage error naming the flag or value", tc.args, tc.env, err)
		}
	}

	t.Run("flag", func(t *testing.T) {
		t.Parallel()
		// With the embedded server in the process, the worker sizes itself
		// to half the limit.
		w := startWorker(t, t.TempDir(), "--memory-limit", "256Mi")
		out := w.out.String()
		for _, want := range []string{`"memory_limit":"256MiB"`, `"source":"--memory-limit"`, `"worker_share":"128MiB"`,
			`"go_soft_limit":"241591911"`, "bounds sized to the memory limit"} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %s", want)
			}
		}
		if strings.Contains(out, `"max_actors":100000`) || strings.Contains(out, `"level":"warn","message":"memory limit`) {
			t.Errorf("128 MiB left MaxActors at 100,000, or warned:\n%s", out)
		}
	})
	t.Run("GOMEMLIMIT, explicit bounds that cannot fit", func(t *testing.T) {
		t.Parallel()
		out := startWorkerEnv(t, []string{"GOMEMLIMIT=200MiB"}, "--max-actors", "100000")
		for _, want := range []string{`"memory_limit":"200MiB"`, `"source":"GOMEMLIMIT"`, `"go_soft_limit":"GOMEMLIMIT"`,
			`"max_actors":100000`, "more than the 50 MiB"} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %s", want)
			}
		}
	})
}

// startWorkerEnv runs the worker binary with the embedded server and only
// env for its environment until it is ready, then stops it; it returns
// what the worker logged.
func startWorkerEnv(t *testing.T, env []string, extra ...string) string {
	t.Helper()
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--listen", "127.0.0.1:-1", "--http", "127.0.0.1:0", "--data-dir", t.TempDir()}, extra...)
	cmd := exec.Command(filepath.Join(dir, "worker"), args...)
	cmd.Env = env
	var out natstest.Output
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("worker output:\n%s", out.String())
		}
	})
	waitHTTP(t, "http://"+httpAddrOf(t, &out)+"/readyz", 200, 30*time.Second)
	return out.String()
}
