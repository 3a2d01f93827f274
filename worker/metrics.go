package worker

import (
	"context"
	"slices"
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

// figureReader reads the figures of /metrics that live in the server.
type figureReader interface {
	// Lag counts the events of partitions stored and not yet acknowledged.
	Lag(ctx context.Context, workflow string, partitions []int) (uint64, error)
	// DeadLetters counts the workflow's dead letters.
	DeadLetters(ctx context.Context, workflow string) (uint64, error)
	// IndexCount counts the entries of the workflow's inventory under
	// filter: the keys in a state.
	IndexCount(ctx context.Context, workflow, filter string) (uint64, error)
}

var _ figureReader = (*queue.Conn)(nil)

// metrics are the worker's Prometheus metrics, in a registry of its own so
// that two workers in one process do not collide.
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
	// leaderRewinds: partitions rewound after their consumer's new leader.
	leaderRewinds *prometheus.CounterVec
	// attempts that failed for want of the store (trouble.go)
	deadLetterFailures *prometheus.CounterVec
	commitFailures     *prometheus.CounterVec
	// applyLatency: from when the events stream stored an event to when
	// its outcome was committed.
	applyLatency *prometheus.HistogramVec
	lastPull     atomic.Int64 // unix nanoseconds of the last completed pull
	probe        probe
}

func newMetrics(w *Worker) *metrics {
	wf := []string{"workflow"}
	m := &metrics{
		reg:   prometheus.NewRegistry(),
		probe: probe{kick: make(chan struct{}, 1), round: make(chan struct{})},
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
		leaderRewinds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "orderly_consumer_leader_rewinds_total", Help: "Partitions this worker rewound because their consumer elected a new leader (what the old leader delivered and nobody acknowledged comes again).",
		}, wf),
		applyLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "orderly_apply_latency_seconds", Help: "From when the events stream stored an event to when its outcome (applied or rejected) was committed, on this worker.",
			Buckets: latencyBuckets,
		}, wf),
	}
	m.reg.MustRegister(m.received, m.applied, m.rejected, m.duplicates, m.transitions,
		m.actionTime, m.retries, m.deadLettered, m.pullBatch, m.deadLetterFailures, m.commitFailures,
		m.leaderRewinds, m.applyLatency, serverFigures{w: w, m: m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.reg.MustRegister(buildInfo())
	// Readiness as a series, so that an alert can tell a worker that runs
	// but is not ready (it still serves /metrics) from one that is.
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "orderly_ready", Help: "1 while the worker is ready (what /readyz answers), else 0.",
	}, func() float64 {
		if w.Ready() {
			return 1
		}
		return 0
	}))
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
			gauge("orderly_actions_queued", "Slow work waiting for a runner on this worker (--concurrency runners).", func() float64 {
				return float64(f.actQueued.Load())
			}),
			gauge("orderly_actions_running", "Slow work running on this worker.", func() float64 {
				return float64(f.actRunning.Load())
			}),
			gauge("orderly_actions_awaiting_retry", "Slow work on this worker waiting for its next attempt after a failed one.", func() float64 {
				return float64(f.actRetrying.Load())
			}),
			gauge("orderly_actions_oldest_age_seconds", "Age of the oldest slow work pending on this worker (queued, running or awaiting a retry), from when its transition started it; 0 when none.", func() float64 {
				return f.oldestPending().Seconds()
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
		for _, c := range []*prometheus.CounterVec{m.received, m.applied, m.duplicates, m.deadLetterFailures, m.commitFailures, m.leaderRewinds} {
			c.WithLabelValues(f.name)
		}
		m.pullBatch.WithLabelValues(f.name)
		f.applyLatency = m.applyLatency.WithLabelValues(f.name)
	}
}

// latencyBuckets span publish→applied latency from a millisecond (an idle
// worker) to ten minutes (a backlog, or work held behind slow calls).
var latencyBuckets = []float64{
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
	1, 2.5, 5, 10, 30, 60, 120, 300, 600,
}

// The consumer lag, the dead letters and the keys by state are the figures
// of /metrics that take requests to the server. A scrape must not wait for
// a slow or stalled server (the readiness probe shares the HTTP server,
// and a scrape that hangs reports nothing at all), so the requests run on
// a goroutine of their own (probeLoop): a scrape asks for fresh figures
// and waits for them at most probeWait, then serves the last ones. Nobody
// scraping, no requests; many scraping, at most one round per probeFresh.
const (
	probeWait  = 250 * time.Millisecond
	probeFresh = time.Second // figures this recent are served without a new round
	probeLimit = 2 * time.Second
	// clusterFresh spaces the reads of the cluster-wide figures, which only
	// the owner of partition 0 makes.
	clusterFresh = 5 * time.Second
)

// probe hands requests for fresh figures to probeLoop.
type probe struct {
	on    atomic.Bool   // probeLoop runs
	kick  chan struct{} // buffered (1): a scrape wants fresh figures
	at    atomic.Int64  // unix nanoseconds: when the last round ended
	mu    sync.Mutex    // guards round
	round chan struct{} // closed when the next round to begin ends
}

// refresh asks for fresh figures and waits for them, at most probeWait.
func (l *probe) refresh() {
	if !l.on.Load() || time.Since(time.Unix(0, l.at.Load())) < probeFresh {
		return
	}
	l.mu.Lock()
	done := l.round
	l.mu.Unlock()
	signal(l.kick)
	t := time.NewTimer(probeWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// probeLoop reads each workflow's server-side figures when a scrape asks
// for them, until ctx ends.
func (w *Worker) probeLoop(ctx context.Context) {
	l := &w.metrics.probe
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
			f.readFigures(ctx)
		}
		l.at.Store(time.Now().UnixNano())
		close(done)
	}
}

// figures are a workflow's figures of /metrics that live in the server, as
// probeLoop last read them. A figure whose last read failed is not served
// (rather than a sentinel, or a stale value that looks current).
type figures struct {
	mu          sync.Mutex
	lag         uint64
	lagOK       bool
	deadLetters uint64
	// keys counts the keys in each state (f.states' order), from the
	// inventory; keysOK says the last read of every count succeeded.
	keys      []uint64
	keysOK    bool
	clusterOK bool      // the cluster-wide figures were read, as owner of partition 0
	clusterAt time.Time // when they were last read
}

// readFigures reads the consumer lag of the partitions f pulls and, if it
// pulls partition 0 and they are older than clusterFresh, the cluster-wide
// figures.
func (f *flow) readFigures(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, probeLimit)
	defer cancel()
	owned := f.owned()
	lag, err := f.w.conn.Lag(ctx, f.name, owned)
	fg := &f.figures
	fg.mu.Lock()
	fg.lag, fg.lagOK = lag, err == nil
	reporter := slices.Contains(owned, 0)
	due := reporter && time.Since(fg.clusterAt) >= clusterFresh
	if !reporter {
		fg.clusterOK, fg.clusterAt, fg.keysOK = false, time.Time{}, false
	}
	fg.mu.Unlock()
	if !due {
		return
	}
	dead, err := f.w.conn.DeadLetters(ctx, f.name)
	keys, keysOK := f.countKeys(ctx)
	fg.mu.Lock()
	defer fg.mu.Unlock()
	fg.clusterOK = err == nil
	if err == nil {
		fg.deadLetters, fg.clusterAt = dead, time.Now()
	}
	fg.keys, fg.keysOK = keys, keysOK
}

// countKeys counts the keys in each of the workflow's states from its
// inventory: one direct get a state, answered from the server's index of
// subjects (its cost grows with the state's keys, about 0.1 µs each, not
// with the stream). False without an inventory or if a count failed.
func (f *flow) countKeys(ctx context.Context) ([]uint64, bool) {
	if f.index == nil {
		return nil, false
	}
	keys := make([]uint64, len(f.states))
	for i, st := range f.states {
		n, err := f.w.conn.IndexCount(ctx, f.name, contract.IndexStateFilter(f.name, st))
		if err != nil {
			return nil, false
		}
		keys[i] = n
	}
	return keys, true
}

// serverFigures serves the figures probeLoop reads. The consumer lag is
// this worker's share: the partitions it pulls, so that summed over
// workers it counts each partition once. The cluster-wide figures are
// served by one worker only, the one that pulls partition 0, so that
// neither sum() nor max() over workers counts them twice.
type serverFigures struct {
	w *Worker
	m *metrics
}

var (
	lagDesc = prometheus.NewDesc("orderly_consumer_lag",
		"Events stored and not yet acknowledged in the partitions this worker pulls; sum over workers for the workflow's backlog. Absent while it cannot be read.",
		[]string{"workflow"}, nil)
	deadLettersDesc = prometheus.NewDesc("orderly_dead_letters",
		"Dead letters the workflow holds (its dead-letter stream's messages), cluster-wide; served only by the worker that pulls partition 0.",
		[]string{"workflow"}, nil)
	keysDesc = prometheus.NewDesc("orderly_keys",
		"Keys in each state of the workflow, from its inventory (as enqueue stats), cluster-wide; served only by the worker that pulls partition 0, and not with --inventory=false.",
		[]string{"workflow", "state"}, nil)
)

func (c serverFigures) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagDesc
	ch <- deadLettersDesc
	ch <- keysDesc
}

func (c serverFigures) Collect(ch chan<- prometheus.Metric) {
	c.m.probe.refresh()
	for _, f := range c.w.flows {
		fg := &f.figures
		fg.mu.Lock()
		lag, lagOK, dead, clusterOK := fg.lag, fg.lagOK, fg.deadLetters, fg.clusterOK
		keys, keysOK := fg.keys, fg.keysOK
		fg.mu.Unlock()
		if lagOK {
			ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(lag), f.name)
		}
		if clusterOK && f.pulls(0) {
			ch <- prometheus.MustNewConstMetric(deadLettersDesc, prometheus.GaugeValue, float64(dead), f.name)
		}
		// The states are the definition's: the labels are bounded.
		if keysOK && f.pulls(0) {
			for i, st := range f.states {
				ch <- prometheus.MustNewConstMetric(keysDesc, prometheus.GaugeValue, float64(keys[i]), f.name, st)
			}
		}
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
