package worker_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("metrics: %d %v", resp.StatusCode, err)
	}
	return string(body)
}

// metric returns the value of the first sample matching series (a regexp
// of the name and labels), 0 if there is none.
func metric(t *testing.T, body, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + series + ` ([0-9.e+-]+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMetricsMoveWithTraffic(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := startWorker(t, b.url, worker.Config{}, func(context.Context, worker.ActionCall[tally]) (any, error) { return nil, nil })
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()

	before := scrape(t, srv.URL)
	if got := metric(t, before, `orderly_owned_partitions\{workflow="tally"\}`); got != 16 {
		t.Fatalf("owned partitions %v", got)
	}
	settled := countSettled(t, b.client, "tally", 3) // add, add, worked
	ctx := context.Background()
	for _, ev := range []contract.Envelope{add(1), add(2), {Event: "work"}, {Event: "nope"}} {
		if _, err := b.client.Publish(ctx, "tally", "m", ev); err != nil {
			t.Fatal(err)
		}
	}
	settled.wait(t, 10*time.Second)
	var after string
	waitFor(t, 10*time.Second, "the counters", func() bool {
		after = scrape(t, srv.URL)
		return metric(t, after, `orderly_events_applied_total\{workflow="tally"\}`) == 4 &&
			metric(t, after, `orderly_dead_lettered_total\{reason="unknown_event",workflow="tally"\}`) == 1
	})
	for series, want := range map[string]float64{
		`orderly_events_received_total\{workflow="tally"\}`:                                    4,
		`orderly_events_rejected_total\{reason="unknown_event",workflow="tally"\}`:             1,
		`orderly_transitions_total\{from="open",to="open",workflow="tally"\}`:                  4,
		`orderly_dead_lettered_total\{reason="unknown_event",workflow="tally"\}`:               1,
		`orderly_action_duration_seconds_count\{action="slow",outcome="ok",workflow="tally"\}`: 1,
		`orderly_live_actors\{workflow="tally"\}`:                                              1,
	} {
		if got := metric(t, after, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
		if metric(t, before, series) == want && want != 1 {
			t.Errorf("%s did not move", series)
		}
	}
}

// TestMetricsBuildInfo: /metrics names the running build, as --version
// does, for dashboards that compare replicas.
func TestMetricsBuildInfo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w, err := worker.New(natstest.NATS(t, b.url), worker.Config{}, tallyWorkflow(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	body := scrape(t, srv.URL)
	m := regexp.MustCompile(`(?m)^orderly_build_info\{goversion="([^"]+)",revision="([^"]+)",version="([^"]+)"\} 1$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no orderly_build_info{goversion,revision,version} 1 in:\n%s", body)
	}
	if m[1] != runtime.Version() {
		t.Errorf("goversion %q, want %q", m[1], runtime.Version())
	}
}

// TestMetricsFailureCountersServedFromTheStart: the counters labelled by
// workflow alone are served at zero before any event, so that an alert on
// the first increase of a failure counter (docs/operations.md) can fire.
func TestMetricsFailureCountersServedFromTheStart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w, err := worker.New(natstest.NATS(t, b.url), worker.Config{}, tallyWorkflow(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	body := scrape(t, srv.URL)
	for _, name := range []string{
		"orderly_events_received_total", "orderly_events_applied_total", "orderly_duplicates_skipped_total",
		"orderly_dead_letter_failures_total", "orderly_commit_failures_total", "orderly_pull_batch_size_count",
	} {
		if !regexp.MustCompile(`(?m)^` + name + `\{workflow="tally"\} 0$`).MatchString(body) {
			t.Errorf("no %s{workflow=\"tally\"} 0 before any event in:\n%s", name, body)
		}
	}
}

// TestMetricsReadyFollowsReadyz: orderly_ready says what /readyz answers,
// so that an alert can find a worker that runs (and is scraped) but is not
// ready: 0 before Start, 1 once ready, 0 again after Stop.
func TestMetricsReadyFollowsReadyz(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w, err := worker.New(natstest.NATS(t, b.url), worker.Config{}, tallyWorkflow(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.Handler())
	defer srv.Close()
	ready := func() (float64, int) {
		code, _ := natstest.HTTPGet(srv.URL + "/readyz")
		return metric(t, scrape(t, srv.URL), `orderly_ready`), code
	}
	if v, code := ready(); v != 0 || code != http.StatusServiceUnavailable {
		t.Fatalf("before Start: orderly_ready %v, /readyz %d; want 0 and 503", v, code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if v, code := ready(); v != 1 || code != http.StatusOK {
		t.Fatalf("after Start: orderly_ready %v, /readyz %d; want 1 and 200", v, code)
	}
	if err := w.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if v, code := ready(); v != 0 || code != http.StatusServiceUnavailable {
		t.Fatalf("after Stop: orderly_ready %v, /readyz %d; want 0 and 503", v, code)
	}
}
