package worker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/orderly-dev/orderly/queue"
)

// Config bounds the runtime. A zero field means its default; every bound is
// a bound on memory or concurrency that traffic cannot raise.
type Config struct {
	// Queue is the JetStream layout of every workflow (partitions, queue
	// limit, replicas, ack wait, ...). Queue.Workflow is ignored: each
	// workflow gets its own. Defaults: see queue.Spec.
	Queue queue.Spec
	// Batch is the most events asked for in one pull of a partition.
	// Default: 256.
	Batch int
	// MaxInFlight is the most events of one partition held in memory at once
	// (pulled and not yet acknowledged). Default: 2 × Batch.
	MaxInFlight int
	// Mailbox is the most events waiting for one key; when a key's mailbox is
	// full its partition stops pulling until there is room. Default: 64.
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
	// MaxActors caps the actors in memory; past it the least recently used
	// idle ones are passivated first. Default: 100,000.
	MaxActors int
	// ShutdownTimeout bounds Stop: how long running actions get to finish
	// before they are left pending in durable state. Default: 20s.
	ShutdownTimeout time.Duration
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
	// Logger receives the runtime's logs. Default: a disabled logger.
	Logger *zerolog.Logger
	// Now is the clock: of state timestamps, timers, passivation and the
	// stall check of Ready. Default: time.Now.
	Now func() time.Time
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
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
	def(&c.Batch, 256)
	def(&c.MaxInFlight, 2*c.Batch)
	// The consumer must let a partition hold what MaxInFlight allows.
	def(&c.Queue.MaxAckPending, max(1024, c.MaxInFlight))
	c.Queue = c.Queue.WithDefaults()
	def(&c.Mailbox, 64)
	def(&c.GroupCommit, 64)
	def(&c.Concurrency, 64)
	def(&c.ActionRetries, 3)
	def(&c.MaxActors, 100_000)
	defDur(&c.ActionTimeout, 30*time.Second)
	defDur(&c.RetryBackoff, 200*time.Millisecond)
	defDur(&c.ResumeAfter, c.ActionTimeout*time.Duration(c.ActionRetries+2))
	defDur(&c.ActorIdle, time.Minute)
	defDur(&c.ShutdownTimeout, 20*time.Second)
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
