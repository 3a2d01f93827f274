package main

import (
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/internal/natstest"
)

// testBench is a benchmark against a fresh server, with small figures.
func testBench(t *testing.T, producer string) *bench {
	t.Helper()
	srv := natstest.Server(t)
	cfg, err := parseFlags([]string{"-producer", producer, "-keys", "50", "-timeout", "60s"})
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{cfg: cfg, url: srv.ClientURL(), srv: &natsServer{url: srv.ClientURL()}}
	if err := b.connectAdmin(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.admin.Close)
	return b
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestOrderScenario: the order scenario runs the reference workflow's
// start_processing on distinct keys and counts an event done at the settled
// status of fetch_order's outcome, with no error.
func TestOrderScenario(t *testing.T) {
	t.Parallel()
	b := testBench(t, "inproc")
	ctx := testContext(t)
	r, err := b.orderly(ctx, orderlyRun{kind: kindOrder, name: "order0", events: 200, keys: 200, distinct: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.eps <= 0 || r.errors != 0 || r.actors == 0 {
		t.Errorf("order run: %+v, want a rate, no errors, live actors", r)
	}
	// The run deletes the workflow's streams: a second run starts afresh
	// (the same 200 keys are new keys again, not refused from completed).
	if _, err := b.orderly(ctx, orderlyRun{kind: kindOrder, name: "order1", events: 200, keys: 200, distinct: true}); err != nil {
		t.Fatalf("second run: %v", err)
	}
}

// TestPacedProducerProcess: with -producer process the paced runs publish
// from a child process, and its send and ack times come back on the
// benchmark's clock: every latency is set and positive, the rate achieved.
func TestPacedProducerProcess(t *testing.T) {
	t.Parallel()
	b := testBench(t, "process")
	ctx := testContext(t)
	for name, run := range map[string]func() (result, error){
		"raw": func() (result, error) { return b.raw(ctx, "pp", 300, 1000) },
		"noop": func() (result, error) {
			return b.orderly(ctx, orderlyRun{kind: kindNoop, name: "ppnoop", events: 300, keys: 50, rate: 1000})
		},
	} {
		r, err := run()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.rate <= 0 || r.ackP50 <= 0 || r.ackP99 < r.ackP50 || r.doneP50 <= 0 || r.doneP99 < r.doneP50 {
			t.Errorf("%s paced with the producer in a process: %s, want every latency set", name, r)
		}
		// An hour would mean the two processes' times were not put on
		// one scale.
		if r.doneP99 > time.Minute || r.ackP99 > time.Minute {
			t.Errorf("%s: latencies %s / %s: the producer's times are off the benchmark's clock", name, r.ackP99, r.doneP99)
		}
	}
}

// TestAsynqScenario builds asynqbench (its own module) and runs it small:
// every task done, a rate, both peak RSS. Skipped without redis-server, as
// the benchmark skips the scenario.
func TestAsynqScenario(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("no redis-server on the PATH (Debian: apt-get install redis-server)")
	}
	b := testBench(t, "inproc")
	ctx := testContext(t)
	bin, err := buildAsynq(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.asynq(ctx, bin, 300)
	if err != nil {
		t.Fatal(err)
	}
	if r.eps <= 0 || r.rss == 0 || r.serverRSS == 0 {
		t.Errorf("asynq run: %+v, want a rate and both peak RSS", r)
	}
}

// TestAsynqScenarioWithoutRedis: with no redis-server the scenario is
// skipped with errNoRedis, before anything is built.
func TestAsynqScenarioWithoutRedis(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := buildAsynq(context.Background(), t.TempDir()); err != errNoRedis {
		t.Fatalf("buildAsynq without redis-server: %v, want errNoRedis", err)
	}
}
