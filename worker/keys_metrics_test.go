package worker_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/worker"
)

// TestMetricsKeysByStateFromInventory: /metrics serves the keys in each
// state of the workflow (orderly_keys{workflow,state}), read from the
// inventory, so that a dashboard shows them as enqueue stats does: every
// state of the definition (the labels are bounded by it), 0 included; and
// a worker that keeps no inventory serves none rather than zeros.
func TestMetricsKeysByStateFromInventory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := startWorker(t, b.url, worker.Config{}, nil)
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 5 {
		ev := add(i) // open
		if i >= 3 {
			ev = contract.Envelope{Event: "close"} // closed
		}
		if _, st, err := b.client.PublishAndWait(ctx, "tally", fmt.Sprintf("k-%d", i), ev); err != nil || st.Error != nil {
			t.Fatal(err, st.Error)
		}
	}
	series := func(state string) string { return `orderly_keys\{state="` + state + `",workflow="tally"\}` }
	var body string
	waitFor(t, 30*time.Second, "3 keys open and 2 closed on /metrics", func() bool {
		body = scrape(t, srv.URL)
		return metric(t, body, series("open")) == 3 && metric(t, body, series("closed")) == 2
	})
	for _, state := range []string{"open", "closed", "waiting"} {
		if n := len(grepMetrics(body, "orderly_keys{state=\""+state+"\",workflow=\"tally\"}")); n == 0 {
			t.Errorf("no series for state %s:\n%s", state, grepMetrics(body, "orderly_keys"))
		}
	}
	s, err := b.client.Stats(ctx, "tally")
	if err != nil {
		t.Fatal(err)
	}
	for state, n := range s.States {
		if got := metric(t, body, series(state)); got != float64(n) {
			t.Errorf("orderly_keys of %s: %v; enqueue stats says %d", state, got, n)
		}
	}

	// Without the inventory: no series at all.
	off := setup(t)
	wo := startWorker(t, off.url, worker.Config{DisableInventory: true}, nil)
	osrv := httptest.NewServer(wo.Handler())
	defer osrv.Close()
	if _, st, err := off.client.PublishAndWait(ctx, "tally", "k", add(1)); err != nil || st.Error != nil {
		t.Fatal(err, st.Error)
	}
	waitFor(t, 30*time.Second, "the cluster-wide figures read (orderly_dead_letters)", func() bool {
		body = scrape(t, osrv.URL)
		return grepMetrics(body, "orderly_dead_letters{") != ""
	})
	if lines := grepMetrics(body, "orderly_keys"); lines != "" {
		t.Errorf("a worker without the inventory serves\n%s", lines)
	}
}
