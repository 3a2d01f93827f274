package worker_test

import (
	"context"
	"io"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

// TestConsumerLeaderChangeRewindsThePartition: when a partition's consumer
// elects a new leader, the worker pulling it rewinds it to the ack floor.
// The soak (seed 101) lost five events delivered by a consumer leader whose
// node restarted 0.3 s later, to a worker killed before it applied them:
// the next leader never delivered them again. A rewind on the new leader
// asks it for everything not acknowledged, whatever it knows of what its
// predecessor delivered. The events before and after the change are each
// applied once, in order.
func TestConsumerLeaderChangeRewindsThePartition(t *testing.T) {
	t.Parallel()
	cluster := natstest.StartCluster(t, 3)
	w := startWorker(t, cluster.URL(), worker.Config{ID: "a", Queue: worker.QueueConfig{Partitions: 1, Replicas: 3}}, nil)
	nc := natstest.NATS(t, cluster.URL())
	producer := natstest.Client(t, cluster.URL())
	publish := func(from, to int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for i := from; i <= to; i++ {
			if _, err := producer.Publish(ctx, "tally", "k1", add(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	applied := func(n int) func() bool {
		return func() bool {
			_, d := readTally(t, producer, "k1")
			return len(d.Seen) >= n
		}
	}
	publish(1, 40)
	waitFor(t, 30*time.Second, "the first 40 events applied", applied(40))

	// The consumer's leader steps down; another node takes it over.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.LEADER.STEPDOWN.ORDERLY_EVENTS_TALLY.orderly_tally_p0", nil); err != nil {
		t.Fatalf("step down the consumer's leader: %v", err)
	}
	waitFor(t, 20*time.Second, "the worker to rewind the partition", func() bool { return leaderRewinds(t, w) >= 1 })

	publish(41, 80)
	waitFor(t, 30*time.Second, "all 80 events applied", applied(80))
	rec, d := readTally(t, producer, "k1")
	want := make([]int, 80)
	for i := range want {
		want[i] = i + 1
	}
	if !slices.Equal(d.Seen, want) || rec.Version != 80 {
		t.Errorf("k1 at version %d saw %v; want each of 1..80 once, in order", rec.Version, d.Seen)
	}
}

var leaderRewindsLine = regexp.MustCompile(`(?m)^orderly_consumer_leader_rewinds_total\{workflow="tally"\} (\d+)`)

// leaderRewinds reads orderly_consumer_leader_rewinds_total from w's /metrics.
func leaderRewinds(t *testing.T, w *worker.Worker) int {
	t.Helper()
	rec := httptest.NewRecorder()
	w.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	m := leaderRewindsLine.FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no orderly_consumer_leader_rewinds_total for tally")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}
