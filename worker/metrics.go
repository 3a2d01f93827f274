package worker

import (
	"context"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/buildinfo"
	"github.com/orderly-dev/orderly/internal/queue"
)

// metrics are the worker's Prometheus metrics, in a registry of its own so
// that two workers in one process do not collide.
// lagReader reads a workflow's queue as JetStream sees it.
type lagReader interface {
	Info(ctx context.Context, workflow string) (queue.Info, error)
}

var _ lagReader = (*queue.Conn)(nil)

type metrics struct {
	reg          *prometheus.Registry
	received     *prometheus.CounterVec
	applied      *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	duplicates   *prometheus.CounterVec
	transitions  *prometheus.CounterVec
	actionTime   *prometheus.HistogramVec
	retries      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	pullBatch    *prometheus.HistogramVec
	// attempts that failed for want of the store (trouble.go)
	deadLetterFailures *prometheus.CounterVec
	commitFailures     *prometheus.CounterVec
	lastPull           atomic.Int64 // unix nanoseconds of the last completed pull
	lag                lagProbe
}

func newMetrics(w *Worker) *metrics {
	wf := []string{"workflow"}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		lag: lagProbe{kick: make(chan struct{}, 1), round: make(chan struct{})},
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_events_received_total", Help: "Events pulled from the stream.",
		}, wf),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_events_applied_total", Help: "Events applied and committed (client events, action outcomes, timeouts).",
		}, wf),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_events_rejected_total", Help: "Events rejected, by reason (the status error code).",
		}, []string{"workflow", "reason"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_duplicates_skipped_total", Help: "Events acknowledged without being applied: redeliveries of events applied already, and events whose job id an earlier event of the same key and event took within the dedupe window.",
		}, wf),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_transitions_total", Help: "Committed transitions, by states.",
		}, []string{"workflow", "from", "to"}),
		actionTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "orderly_action_duration_seconds", Help: "Duration of one attempt of an action, by outcome (ok, retry, failed).",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"workflow", "action", "outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_action_retries_total", Help: "Action attempts that failed and were retried.",
		}, []string{"workflow", "action"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_dead_lettered_total", Help: "Events sent to the dead letters, by reason.",
		}, []string{"workflow", "reason"}),
		deadLetterFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_dead_letter_failures_total", Help: "Attempts to dead-letter an event that failed (the event stays in the stream and is tried again).",
		}, wf),
		commitFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_commit_failures_total", Help: "Attempts to commit a key's state (and its timers) that failed (its events stay unacknowledged and are tried again).",
		}, wf),
		pullBatch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "orderly_pull_batch_size", Help: "Events delivered by one pull request.",
			Buckets: []float64{0, 1, 4, 16, 64, 256, 1024},
		}, wf),
	}
	m.reg.MustRegister(m.received, m.applied, m.rejected, m.duplicates, m.transitions,
		m.actionTime, m.retries, m.deadLettered, m.pullBatch, m.deadLetterFailures, m.commitFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(buildInfo())
	for _, f := range w.flows {
		gauge := func(name, help string, v func() float64) prometheus.Collector {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: name, Help: help, ConstLabels: prometheus.Labels{"workflow": f.name},
			}, v)
		}
		m.reg.MustRegister(
			gauge("orderly_live_actors", "Keys with an actor in memory.", func() float64 {
				var s Stats
				f.stats(&s)
				return float64(s.Actors)
			}),
			gauge("orderly_mailbox_depth", "Events waiting in actors' mailboxes.", func() float64 {
				var s Stats
				f.stats(&s)
				return float64(s.Queued)
			}),
			gauge("orderly_owned_partitions", "Partitions this worker pulls.", func() float64 {
				f.pmu.Lock()
				defer f.pmu.Unlock()
				return float64(len(f.pullers))
			}),
			gauge("orderly_consumer_lag", "Events stored and not yet acknowledged, all partitions (-1: unknown).", func() float64 {
				m.lag.refresh()
				return math.Float64frombits(f.lag.Load())
			}),
		)
	}
	m.initSeries(w)
	return m
}

// initSeries creates, at zero, the series whose labels are known before
// any event: those labelled by workflow alone. A failure counter that
// exists from the start lets rate() and alerts (docs/operations.md) see
// its first increase; one created by that increase would not.
func (m *metrics) initSeries(w *Worker) {
	for _, f := range w.flows {
		for _, c := range []*prometheus.CounterVec{m.received, m.applied, m.duplicates, m.deadLetterFailures, m.commitFailures} {
			c.WithLabelValues(f.name)
		}
		m.pullBatch.WithLabelValues(f.name)
	}
}

// The consumer lag is the one figure of /metrics that takes a request to
// the server. A scrape must not wait for a slow or stalled server (the
// readiness probe shares the HTTP server, and a scrape that hangs reports
// nothing at all), so the requests run on a goroutine of their own
// (lagLoop): a scrape asks for fresh figures and waits for them at most
// lagWait, then serves the last ones.
const (
	lagWait  = 250 * time.Millisecond
	lagFresh = time.Second // figures this recent are served without a new round
	lagLimit = 2 * time.Second
)

// lagProbe hands requests for fresh consumer lag figures to lagLoop.
type lagProbe struct {
	on    atomic.Bool   // lagLoop runs
	kick  chan struct{} // buffered (1): a scrape wants fresh figures
	at    atomic.Int64  // unix nanoseconds: when the last round ended
	mu    sync.Mutex    // guards round
	round chan struct{} // closed when the next round to begin ends
}

// refresh asks for fresh figures and waits for them, at most lagWait.
func (l *lagProbe) refresh() {
	if !l.on.Load() || time.Since(time.Unix(0, l.at.Load())) < lagFresh {
		return
	}
	l.mu.Lock()
	done := l.round
	l.mu.Unlock()
	signal(l.kick)
	t := time.NewTimer(lagWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// lagLoop reads each workflow's consumer lag when a scrape asks for it,
// until ctx ends.
func (w *Worker) lagLoop(ctx context.Context) {
	l := &w.metrics.lag
	l.on.Store(true)
	defer l.on.Store(false)
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.kick:
		}
		l.mu.Lock()
		done := l.round
		l.round = make(chan struct{})
		l.mu.Unlock()
		for _, f := range w.flows {
			lag := -1.0
			rctx, cancel := context.WithTimeout(ctx, lagLimit)
			if info, err := w.conn.Info(rctx, f.name); err == nil {
				lag = float64(info.Pending)
			}
			cancel()
			f.lag.Store(math.Float64bits(lag))
		}
		l.at.Store(time.Now().UnixNano())
		close(done)
	}
}

// observe counts what a committed batch did.
func (m *metrics) observe(workflow string, statuses []contract.Status) {
	for _, st := range statuses {
		switch {
		case st.Error != nil && st.Error.Code == contract.CodeDuplicate:
			// Counted as a duplicate, not a rejection.
		case st.Error == nil || st.Error.Code == contract.CodeActionFailed:
			m.applied.WithLabelValues(workflow).Inc()
			m.transitions.WithLabelValues(workflow, st.From, st.To).Inc()
		default:
			m.rejected.WithLabelValues(workflow, st.Error.Code).Inc()
		}
	}
}

// reasonCode is the code before the colon of a dead-letter reason.
func reasonCode(reason string) string {
	code, _, _ := strings.Cut(reason, ":")
	return code
}

// buildInfo is the constant 1 labelled with the running build, as
// Prometheus' own *_build_info metrics.
func buildInfo() prometheus.Collector {
	b := buildinfo.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "orderly_build_info", Help: "The running build: Orderly's version, VCS revision and Go version; always 1.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}
