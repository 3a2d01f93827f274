package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

// gate blocks the actions that enter it until it is opened (or their
// context ends), counting those inside.
type gate struct {
	open chan struct{}
	once sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{open: make(chan struct{})}
	t.Cleanup(g.release) // a failing test must not leave actions blocked
	return g
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

func (g *gate) wait(ctx context.Context) error {
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestMetricsShowTheBacklog is the finding "while 58,000 keys waited for
// their slow call, every metric showed a backlog of 0": with more slow work
// than Concurrency, /metrics (over real HTTP) shows what waits for a
// runner, what runs, what waits for its next attempt and how old the
// oldest is; and all of it goes back to 0 once the work is done.
func TestMetricsShowTheBacklog(t *testing.T) {
	t.Parallel()
	const keys, concurrency = 50, 2
	b := setup(t)
	g := newGate(t)
	w := startWorker(t, b.url, worker.Config{Concurrency: concurrency, ActionTimeout: 2 * time.Minute},
		func(ctx context.Context, call worker.ActionCall[tally]) (any, error) {
			if call.Key == "retry" && call.Attempt == 1 {
				return nil, worker.RetryAfter(10*time.Second, errors.New("busy"))
			}
			return nil, g.wait(ctx)
		})
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	series := func(name string) string { return name + `\{workflow="tally"\}` }
	queued, running, retrying, oldest := series("orderly_actions_queued"), series("orderly_actions_running"),
		series("orderly_actions_awaiting_retry"), series("orderly_actions_oldest_age_seconds")
	settled := countSettled(t, b.client, "tally", keys+1) // each key's "worked"
	ctx := context.Background()

	// One action fails and waits 10 s for its next attempt.
	if _, err := b.client.Publish(ctx, "tally", "retry", contract.Envelope{Event: "work"}); err != nil {
		t.Fatal(err)
	}
	var body string
	waitFor(t, 30*time.Second, "an action awaiting its retry", func() bool {
		body = scrape(t, srv.URL)
		return metric(t, body, retrying) == 1
	})
	if got := metric(t, body, oldest); got <= 0 {
		t.Errorf("oldest age %v with an action awaiting its retry, want > 0", got)
	}

	// 50 more than the runners can take.
	for k := range keys {
		if _, err := b.client.Publish(ctx, "tally", fmt.Sprintf("k-%d", k), contract.Envelope{Event: "work"}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "the backlog on /metrics", func() bool {
		body = scrape(t, srv.URL)
		// The retried action may come due and join the queue meanwhile.
		return metric(t, body, running) == concurrency &&
			metric(t, body, queued)+metric(t, body, retrying) == keys-concurrency+1
	})
	first := metric(t, body, oldest)
	if first <= 0 {
		t.Fatalf("oldest age %v with %v actions queued, want > 0:\n%s", first, metric(t, body, queued), grepMetrics(body, "orderly_actions"))
	}
	waitFor(t, 30*time.Second, "the oldest age to grow", func() bool {
		return metric(t, scrape(t, srv.URL), oldest) > first
	})

	g.release()
	settled.wait(t, 60*time.Second)
	waitFor(t, 30*time.Second, "the backlog gauges back at 0", func() bool {
		body = scrape(t, srv.URL)
		return metric(t, body, queued) == 0 && metric(t, body, running) == 0 &&
			metric(t, body, retrying) == 0 && metric(t, body, oldest) == 0
	})
	for _, s := range []string{queued, running, retrying, oldest} {
		if !regexp.MustCompile(`(?m)^` + s + ` 0$`).MatchString(body) {
			t.Errorf("%s not served at 0 once idle:\n%s", s, grepMetrics(body, "orderly_actions"))
		}
	}
}

// grepMetrics returns body's lines that start with prefix, for messages.
func grepMetrics(body, prefix string) string {
	var out []string
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestMetricsConsumerLagNeverUnknownSentinel: orderly_consumer_lag was -1
// while it could not be read (before the worker started, or with the
// server away), which a sum() over replicas turns into a wrong backlog.
// Unknown is now no series at all; known, it is never negative.
func TestMetricsConsumerLagNeverUnknownSentinel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w, err := worker.New(natstest.NATS(t, b.url), worker.Config{}, tallyWorkflow(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	body := scrape(t, srv.URL)
	if lines := grepMetrics(body, "orderly_consumer_lag"); lines != "" {
		t.Errorf("a worker not started serves a consumer lag it cannot know:\n%s", lines)
	}
	if regexp.MustCompile(`(?m)^orderly_\S+ -1$`).MatchString(body) {
		t.Errorf("a -1 sentinel among the metrics:\n%s", body)
	}

	started := startWorker(t, b.url, worker.Config{}, nil)
	srv2 := httptest.NewServer(started.Handler())
	defer srv2.Close()
	waitFor(t, 10*time.Second, "a consumer lag of 0", func() bool {
		return regexp.MustCompile(`(?m)^orderly_consumer_lag\{workflow="tally"\} 0$`).MatchString(scrape(t, srv2.URL))
	})
}

// TestMetricsPerReplicaAndClusterWide: with two replicas, each reports the
// consumer lag of the partitions it pulls, so that sum() over replicas is
// the workflow's backlog, counted once; the cluster-wide gauges (dead
// letters) are served by the replica that pulls partition 0 alone, so that
// neither sum() nor max() counts them twice.
func TestMetricsPerReplicaAndClusterWide(t *testing.T) {
	t.Parallel()
	const keys = 40
	b := setup(t)
	g := newGate(t)
	slow := func(ctx context.Context, _ worker.ActionCall[tally]) (any, error) { return nil, g.wait(ctx) }
	cfg := func(id string) worker.Config {
		return worker.Config{ID: id, Queue: worker.QueueConfig{MemberTTL: 2 * time.Second, PinnedTTL: 2 * time.Second}}
	}
	ws := []*worker.Worker{startWorker(t, b.url, cfg("replica-a"), slow), startWorker(t, b.url, cfg("replica-b"), slow)}
	var urls []string
	for _, w := range ws {
		srv := httptest.NewServer(w.Handler())
		defer srv.Close()
		urls = append(urls, srv.URL)
	}
	waitFor(t, 30*time.Second, "8 partitions each", func() bool {
		return len(ws[0].Partitions()["tally"]) == 8 && len(ws[1].Partitions()["tally"]) == 8
	})

	// Each key's "add" waits, unacknowledged, behind the key's slow work;
	// one event is dead-lettered.
	ctx := context.Background()
	for k := range keys {
		key := fmt.Sprintf("k-%d", k)
		for _, ev := range []contract.Envelope{{Event: "work"}, add(k)} {
			if _, err := b.client.Publish(ctx, "tally", key, ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := b.client.Publish(ctx, "tally", "dead", contract.Envelope{Event: "nope"}); err != nil {
		t.Fatal(err)
	}

	lagOf := regexp.MustCompile(`(?m)^orderly_consumer_lag\{workflow="tally"\} (\S+)$`)
	deadOf := regexp.MustCompile(`(?m)^orderly_dead_letters\{workflow="tally"\} (\S+)$`)
	var bodies []string
	var sum, dead float64
	last := ""
	waitFor(t, 3*time.Minute, "the backlog summed over replicas and one dead letter", func() bool {
		bodies = []string{scrape(t, urls[0]), scrape(t, urls[1])}
		sum, dead = 0.0, 0.0
		for _, body := range bodies {
			sum += metric(t, body, `orderly_consumer_lag\{workflow="tally"\}`)
			dead += metric(t, body, `orderly_dead_letters\{workflow="tally"\}`)
		}
		if sum == keys && dead == 1 {
			return true
		}
		if seen := fmt.Sprintf("lag summed %v (want %d), dead letters %v (want 1); partitions %v and %v", sum, keys, dead,
			ws[0].Partitions()["tally"], ws[1].Partitions()["tally"]); seen != last {
			t.Log(seen) // what the failure would have to go on
			last = seen
		}
		return false
	})
	for i, body := range bodies {
		if !lagOf.MatchString(body) {
			t.Errorf("replica %d serves no consumer lag", i)
		}
		if metric(t, body, `orderly_consumer_lag\{workflow="tally"\}`) == 0 {
			t.Errorf("replica %d reports no lag of its own 8 partitions (20 of 40 keys each, give or take)", i)
		}
		pulls0 := ws[i].Partitions()["tally"][0] == 0
		if serves := deadOf.MatchString(body); serves != pulls0 {
			t.Errorf("replica %d pulls partition 0: %v, serves orderly_dead_letters: %v", i, pulls0, serves)
		}
	}
	g.release()
}

// TestMetricsApplyLatencyFromStoreTime: the publish→applied histogram
// measures from when the stream stored each event, so events stored while
// no worker ran count the time they waited.
func TestMetricsApplyLatencyFromStoreTime(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// The stream must exist to store events before the worker starts.
	w0 := startWorker(t, b.url, worker.Config{}, nil)
	stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w0.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		if _, err := b.client.Publish(ctx, "tally", "late", add(i)); err != nil {
			t.Fatal(err)
		}
	}
	stored := time.Now()
	time.Sleep(1200 * time.Millisecond) // what is measured: events waiting with no worker
	settled := countSettled(t, b.client, "tally", 3)
	w := startWorker(t, b.url, worker.Config{}, nil)
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	settled.wait(t, 30*time.Second)
	waited := time.Since(stored)

	var body string
	waitFor(t, 10*time.Second, "3 latencies observed", func() bool {
		body = scrape(t, srv.URL)
		return metric(t, body, `orderly_apply_latency_seconds_count\{workflow="tally"\}`) == 3
	})
	if n := metric(t, body, `orderly_apply_latency_seconds_bucket\{workflow="tally",le="1"\}`); n != 0 {
		t.Errorf("%v events applied within 1 s of being stored; all waited at least 1.2 s:\n%s", n, grepMetrics(body, "orderly_apply_latency"))
	}
	sum := metric(t, body, `orderly_apply_latency_seconds_sum\{workflow="tally"\}`)
	if sum < 3*1.2 || sum > 3*(waited.Seconds()+1) {
		t.Errorf("latency sum %v s for 3 events stored %v ago, want about 3×1.2..3×%v", sum, waited, waited.Seconds())
	}
}
