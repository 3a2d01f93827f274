package worker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/internal/queue"
)

// Config bounds the runtime. A zero field means its default; every bound is
// a bound on memory or concurrency that traffic cannot raise.
type Config struct {
	// Queue is the JetStream layout of every workflow (partitions, queue
	// limit, replicas, ack wait, ...). Defaults: see QueueConfig.
	Queue QueueConfig
	// Batch is the most events asked for in one pull of a partition.
	// Default: 256, at most MaxInFlight.
	Batch int
	// MaxInFlight is the most events of one partition held in memory at once
	// (pulled and not yet acknowledged). Default: 2 × Batch, less if
	// MemoryLimit calls for it.
	MaxInFlight int
	// Mailbox is the most events waiting for one key; when a key's mailbox is
	// full its partition stops pulling until there is room. Default: 64, at
	// most MaxInFlight.
	Mailbox int
	// GroupCommit is the most events of one key applied together and
	// committed with one state write. Default: 64.
	GroupCommit int
	// Concurrency is the most actions (slow work) running at once.
	// Default: 64.
	Concurrency int
	// ActionTimeout bounds one attempt of an action. Default: 30s.
	ActionTimeout time.Duration
	// ActionRetries is how many times a failed action is tried again before
	// its failure event is fed back. Default: 3.
	ActionRetries int
	// RetryBackoff is the first retry's delay; it doubles each attempt, with
	// jitter, up to 30 times itself. Default: 200ms.
	RetryBackoff time.Duration
	// ResumeAfter is how long after starting an action a durable wake-up
	// event is due for its key, which resumes the action if it is still
	// pending then (its worker crashed, say); it is re-armed while work stays
	// pending. Default: ActionTimeout × (ActionRetries + 2).
	ResumeAfter time.Duration
	// ActorIdle is how long a key's actor stays in memory with nothing to do
	// before it is passivated. Default: 1m.
	ActorIdle time.Duration
	// MaxActors caps the actors of each workflow in memory; past it the
	// least recently used idle ones are passivated first, and while none is
	// idle the partitions stop pulling. An actor with slow work pending is
	// not idle, so MaxActors bounds pending work too. Default: 100,000, less
	// if MemoryLimit calls for it.
	MaxActors int
	// MemoryLimit is the memory in bytes the process may use. The bounds
	// left at zero (MaxActors, MaxInFlight, Batch, Mailbox) are then sized
	// so that what they hold at their fullest, by the cost model below,
	// fits in it; bounds set explicitly are kept, and New logs a warning if
	// they cannot fit. It does not set the Go runtime's soft limit (the
	// worker command does). Default: 0, no limit: every bound has its fixed
	// default.
	MemoryLimit int64
	// ShutdownTimeout bounds Stop: how long running actions get to finish
	// before they are left pending in durable state. Default: 20s.
	ShutdownTimeout time.Duration
	// StartTimeout bounds how long Start keeps trying the steps that need
	// the NATS cluster (provisioning, joining the group) while they fail
	// because the cluster cannot serve yet (it is forming and has no
	// JetStream leader, too few nodes are up for the replicas, a request
	// gets no answer): it tries again with backoff, says why in Problems
	// (and so /readyz) meanwhile, and fails once this much time has
	// passed since Start was called. Any other error fails Start at once.
	// Default: 30s; negative: until Start's context ends.
	StartTimeout time.Duration
	// ID names this worker in its group; each partition is pulled by one
	// member of the group at a time. Default: the host name and a random
	// suffix.
	ID string
	// SharedConsumers says other workers pull the same partitions at once.
	// By default a worker takes itself for the only one, and after a lost
	// delivery rewinds a partition's consumer to restore stream order (see
	// queue.PullConfig.Shared); that rewind would disturb other pullers.
	// With SharedConsumers, compare-and-set still keeps every update, but a
	// lost delivery can reach its key after newer events. Default: false.
	SharedConsumers bool
	// DisableInventory turns the inventory off: the worker then keeps no
	// index of its workflows' keys by state, which enqueue stats, keys and
	// stuck (client.Stats, Keys, Stuck) read, and saves its writes (about
	// two per change of state). Every worker of a workflow must agree: the
	// index is not rebuilt when it is turned on again. Default: false, the
	// inventory is kept.
	DisableInventory bool
	// Logger receives the runtime's logs. Default: a disabled logger.
	Logger *zerolog.Logger
	// TracerProvider traces the events the worker handles with
	// OpenTelemetry (docs/operations.md, Tracing): a span per event
	// applied, continuing the W3C trace context its headers carry (as the
	// client sets them), with its commit, each attempt of the actions it
	// starts (the action's context carries the span) and the outcome's
	// application under it; the timers it arms and its dead letter carry
	// the trace on. Pass otel.GetTracerProvider() for the process's global
	// one. Default: nil, no tracing, at no cost: no span is made and no
	// trace header is read (a dead letter still keeps its event's headers,
	// as it keeps all of them).
	TracerProvider trace.TracerProvider
	// Now is the clock: of state timestamps, timers, passivation and the
	// stall check of Ready. Default: time.Now.
	Now func() time.Time
}

// QueueConfig is the JetStream layout of a workflow: its streams, consumers
// and buckets, which Start provisions (creating them, or updating them
// where they differ). A zero field means its default.
type QueueConfig struct {
	// Partitions is the number of partitions of the events stream, each with
	// its own consumer, pulled by one worker at a time; fixed when the stream
	// is created: an existing stream keeps its count, whatever this says.
	// Default: 16, at most 1024.
	Partitions int
	// QueueLimit is the most events stored and not yet processed; past it a
	// publish fails at once with "queue full". Default: 1,000,000.
	QueueLimit int64
	// MaxPayload is the largest event message in bytes. Default: 64 KiB.
	MaxPayload int32
	// DuplicateWindow is how long the events stream itself drops a publish
	// whose job id it stored before (kept in the server's memory, lost on
	// a restart). Default: 2 minutes, and never more than DedupeWindow.
	DuplicateWindow time.Duration
	// DedupeWindow is how long a job id taken by a worker stays claimed:
	// within it the id is applied at most once, across restarts and
	// replicas, and reusing it for another key or event is refused.
	// Default: 24h, at least 1s.
	DedupeWindow time.Duration
	// Replicas of every stream, consumer and bucket: 1 on a single server,
	// 3 on a cluster. Changing it updates them all. Default: 1, at most 5.
	Replicas int
	// AckWait is how long a delivered event may stay unacknowledged before
	// JetStream delivers it again. Default: 30s.
	AckWait time.Duration
	// MaxDeliver is how many deliveries of an event whose key's state
	// cannot be loaded or encoded (a fault of the data, not of the broker)
	// the worker makes before it dead-letters the event (max_deliveries).
	// Default: 10.
	MaxDeliver int
	// MaxAckPending bounds the unacknowledged events of one partition's
	// consumer. Default: 1024, or MaxInFlight if that is more; never less
	// than MaxInFlight.
	MaxAckPending int
	// DeadLetterMaxAge is how long dead letters are kept. Default: 14 days.
	DeadLetterMaxAge time.Duration
	// DeadLetterMaxBytes is the most bytes the dead-letter stream holds,
	// reserved from the server's store when the stream is made. Past it a
	// new dead letter is refused, never an old one dropped: the event
	// stays in the events stream, redelivered, until replaying or deleting
	// dead letters makes room. Default: 256 MiB.
	DeadLetterMaxBytes int64
	// TimersMaxBytes is the most bytes the timers stream holds. Default: 0,
	// no limit of its own (only the server's store); at a limit JetStream
	// would drop the oldest pending timers, timeouts that then never fire.
	TimersMaxBytes int64
	// PinnedTTL is how long a partition stays pinned to a worker that has
	// stopped pulling (a dead one) before another may take it. Default: 5s.
	PinnedTTL time.Duration
	// MemberTTL is how long a worker stays a member of the workflow's
	// group without a heartbeat: the others take over the partitions of a
	// worker that died between 0.8 and 1.2 times MemberTTL after it died.
	// Shorter notices sooner and heartbeats more often (five times per
	// MemberTTL). Default: 2s.
	MemberTTL time.Duration
	// HistoryPerKey is how many statuses of each key the status history
	// keeps (the stream contract.HistoryStream), the oldest dropped first.
	// Default: 100. Negative: no history; the history stream is deleted
	// if there is one, and statuses are only delivered live.
	HistoryPerKey int64
	// HistoryMaxAge is how long the status history keeps a status.
	// Default: 7 days, at least 1s.
	HistoryMaxAge time.Duration
}

// NoHistory is a QueueConfig.HistoryPerKey that keeps no status history.
const NoHistory = -1

// spec is q as the adapter's spec of workflow.
func (q QueueConfig) spec(workflow string, shared bool) queue.Spec {
	return queue.Spec{
		Workflow:           workflow,
		Partitions:         q.Partitions,
		QueueLimit:         q.QueueLimit,
		MaxPayload:         q.MaxPayload,
		DuplicateWindow:    q.DuplicateWindow,
		DedupeWindow:       q.DedupeWindow,
		Replicas:           q.Replicas,
		AckWait:            q.AckWait,
		MaxDeliver:         q.MaxDeliver,
		MaxAckPending:      q.MaxAckPending,
		DeadLetterMaxAge:   q.DeadLetterMaxAge,
		DeadLetterMaxBytes: q.DeadLetterMaxBytes,
		TimersMaxBytes:     q.TimersMaxBytes,
		PinnedTTL:          q.PinnedTTL,
		MemberTTL:          q.MemberTTL,
		HistoryPerKey:      q.HistoryPerKey,
		HistoryMaxAge:      q.HistoryMaxAge,
		Unpinned:           shared,
	}
}

// WithDefaults returns q with every zero field set to its default (the
// adapter's: one list of defaults).
func (q QueueConfig) WithDefaults() QueueConfig {
	s := q.spec("", false).WithDefaults()
	return QueueConfig{
		Partitions:         s.Partitions,
		QueueLimit:         s.QueueLimit,
		MaxPayload:         s.MaxPayload,
		DuplicateWindow:    s.DuplicateWindow,
		DedupeWindow:       s.DedupeWindow,
		Replicas:           s.Replicas,
		AckWait:            s.AckWait,
		MaxDeliver:         s.MaxDeliver,
		MaxAckPending:      s.MaxAckPending,
		DeadLetterMaxAge:   s.DeadLetterMaxAge,
		DeadLetterMaxBytes: s.DeadLetterMaxBytes,
		TimersMaxBytes:     s.TimersMaxBytes,
		PinnedTTL:          s.PinnedTTL,
		MemberTTL:          s.MemberTTL,
		HistoryPerKey:      s.HistoryPerKey,
		HistoryMaxAge:      s.HistoryMaxAge,
	}
}

// The cost model behind MemoryLimit: what each unit of a bound holds at its
// fullest, in heap and goroutine stacks, measured with the pending scenario
// of internal/e2ebench (100,000 keys each with a 500 ms action, the Go
// heap found live by a collection and the stacks at their peaks, at
// several limits; see BENCHMARKS.md) and rounded up. The bounds together
// get memShare of the limit, less memBase and memPerAction × Concurrency:
// the collector lets the heap grow past what is live before it collects
// (as far as twice with GOGC 100, less as it nears the runtime's soft
// limit), and runtime metadata and pages freed but not yet returned need
// room too. Events get at most half of what is left, actors the rest.
const (
	// memShare is the share of MemoryLimit the estimate may reach, in
	// percent.
	memShare = 50
	// memBase is a worker's heap with nothing in flight: the runtime, the
	// NATS connection's buffers, metrics.
	memBase = 24 << 20
	// memPerActor is a live key with one action pending: the actor, its
	// state record and decoded data, the copy of the data its action
	// reads, the map and list entries, the job waiting for a runner
	// (measured: 800 bytes). Keys whose data is larger than a few hundred
	// bytes cost more.
	memPerActor = 1 << 10
	// memPerEvent is one event pulled and not yet acknowledged: the NATS
	// message with its headers, subjects and a body of a few hundred bytes
	// (about 2 KiB), and the stack of the goroutine its key's actor runs on
	// meanwhile (about 8 KiB). Larger bodies cost more (at most
	// Queue.MaxPayload each).
	memPerEvent = 10 << 10
	// memPerAction is one action running: its runner's stack, context and
	// timer, and the goroutine that applies its outcome (what the action
	// itself allocates comes on top).
	memPerAction = 16 << 10
)

// Floors of the sized bounds, however small the limit.
const (
	minMaxInFlight = 8
	minMaxActors   = 100
)

// Fixed defaults of the sized bounds: what they are without MemoryLimit,
// and at most with it.
const (
	defaultBatch       = 256
	defaultMailbox     = 64
	defaultMaxActors   = 100_000
	defaultConcurrency = 64
)

// MemoryPlan is how a Config spends its MemoryLimit: the bounds as sized and
// the cost model's estimate of what they hold at their fullest.
type MemoryPlan struct {
	// Limit is Config.MemoryLimit; 0: none, and the rest is the estimate
	// of the fixed defaults.
	Limit int64
	// Budget is the heap the estimate may reach: memShare of Limit.
	Budget int64
	// Estimate is the heap the bounds are estimated to hold at their
	// fullest, for every workflow together.
	Estimate int64
	// Actors, Events and Actions are Estimate's parts: MaxActors, and
	// MaxInFlight of every partition, of every workflow; Concurrency.
	Actors, Events, Actions int64
	// Warnings say what does not fit: explicit bounds, or a limit below
	// what the smallest bounds need.
	Warnings []string
}

// WithDefaults returns c with every zero field set to its default, and
// sized to MemoryLimit for one workflow (see Sized).
func (c Config) WithDefaults() Config {
	c, _ = c.Sized(1)
	return c
}

// Sized returns c with every zero field set to its default: with a
// MemoryLimit, the bounds left at zero are sized so that workflows
// workflows' estimated heap fits memShare of it (see the cost model
// above); the MemoryPlan says how, and what does not fit.
func (c Config) Sized(workflows int) (Config, MemoryPlan) {
	workflows = max(workflows, 1)
	var plan MemoryPlan
	if c.MemoryLimit > 0 {
		c = c.sizeTo(workflows)
	}
	c = c.withFixedDefaults()
	plan.Limit = c.MemoryLimit
	plan.Budget = c.MemoryLimit / 100 * memShare
	parts := int64(workflows) * int64(c.Queue.Partitions)
	plan.Actors = int64(workflows) * int64(c.MaxActors) * memPerActor
	plan.Events = parts * int64(c.MaxInFlight) * memPerEvent
	plan.Actions = int64(c.Concurrency) * memPerAction
	plan.Estimate = memBase + plan.Actors + plan.Events + plan.Actions
	if c.MemoryLimit > 0 && plan.Estimate > plan.Budget {
		plan.Warnings = append(plan.Warnings, fmt.Sprintf(
			"memory limit %d MiB: MaxActors %d, MaxInFlight %d per partition (%d partitions, %d workflows) and Concurrency %d hold an estimated %d MiB at their fullest, more than the %d MiB (%d %%) the limit leaves them; lower the bounds set explicitly or raise the limit",
			c.MemoryLimit>>20, c.MaxActors, c.MaxInFlight, c.Queue.Partitions, workflows, c.Concurrency,
			plan.Estimate>>20, plan.Budget>>20, memShare))
	}
	return c, plan
}

// sizeTo sets the bounds left at zero to what MemoryLimit affords.
func (c Config) sizeTo(workflows int) Config {
	conc := c.Concurrency
	if conc <= 0 {
		conc = defaultConcurrency
	}
	parts := int64(workflows) * int64(c.Queue.WithDefaults().Partitions)
	avail := c.MemoryLimit/100*memShare - memBase - int64(conc)*memPerAction
	if c.MaxInFlight <= 0 {
		want := 2 * defaultBatch
		if c.Batch > 0 {
			want = 2 * c.Batch
		}
		fit := int(max(avail/2, 0) / (parts * memPerEvent))
		c.MaxInFlight = max(min(want, fit), minMaxInFlight, c.Batch)
	}
	if c.Batch <= 0 {
		c.Batch = min(defaultBatch, c.MaxInFlight)
	}
	if c.Mailbox <= 0 {
		c.Mailbox = min(defaultMailbox, c.MaxInFlight)
	}
	if c.MaxActors <= 0 {
		left := avail - parts*int64(c.MaxInFlight)*memPerEvent
		fit := int(max(left, 0) / (int64(workflows) * memPerActor))
		c.MaxActors = max(min(defaultMaxActors, fit), minMaxActors)
	}
	return c
}

// withFixedDefaults sets every zero field to its fixed default.
func (c Config) withFixedDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.Batch, defaultBatch)
	def(&c.MaxInFlight, 2*c.Batch)
	// The consumer must let a partition hold what MaxInFlight allows.
	def(&c.Queue.MaxAckPending, max(1024, c.MaxInFlight))
	c.Queue = c.Queue.WithDefaults()
	def(&c.Mailbox, defaultMailbox)
	def(&c.GroupCommit, 64)
	def(&c.Concurrency, defaultConcurrency)
	def(&c.ActionRetries, 3)
	def(&c.MaxActors, defaultMaxActors)
	defDur(&c.ActionTimeout, 30*time.Second)
	defDur(&c.RetryBackoff, 200*time.Millisecond)
	defDur(&c.ResumeAfter, c.ActionTimeout*time.Duration(c.ActionRetries+2))
	defDur(&c.ActorIdle, time.Minute)
	defDur(&c.ShutdownTimeout, 20*time.Second)
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		l := zerolog.Nop()
		c.Logger = &l
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%06x", host, rand.Uint32()&0xffffff)
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.MaxInFlight < c.Batch {
		errs = append(errs, fmt.Errorf("MaxInFlight %d is below Batch %d", c.MaxInFlight, c.Batch))
	}
	if c.Queue.MaxAckPending < c.MaxInFlight {
		errs = append(errs, fmt.Errorf("Queue.MaxAckPending %d is below MaxInFlight %d", c.Queue.MaxAckPending, c.MaxInFlight))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("worker: config: %w", err)
	}
	return nil
}

// logMemoryPlan says how the memory limit was spent, and warns of what does
// not fit.
func (w *Worker) logMemoryPlan(p MemoryPlan) {
	if p.Limit <= 0 {
		return
	}
	c := w.cfg
	w.log.Info().Int64("memory_limit", p.Limit).Int("max_actors", c.MaxActors).
		Int("max_in_flight", c.MaxInFlight).Int("batch", c.Batch).Int("mailbox", c.Mailbox).
		Int("concurrency", c.Concurrency).Int64("estimate_mib", p.Estimate>>20).Int64("budget_mib", p.Budget>>20).
		Msg("start-up: bounds sized to the memory limit")
	for _, msg := range p.Warnings {
		w.log.Warn().Msg(msg)
	}
}
