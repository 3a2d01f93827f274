package orderlytest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/orderly-dev/orderly/client"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// DefaultTimeout is how long a Harness, and Spy.RequireCalled, wait for
// something to happen before they fail the test.
const DefaultTimeout = 10 * time.Second

// pollEvery is RequireState's fallback check, in case a status was lost:
// status is pub/sub and the worker goes on when it cannot publish one.
const pollEvery = 250 * time.Millisecond

// Option changes how Start sets a harness up.
type Option func(*options)

type options struct {
	configure []func(*worker.Config)
	timeout   time.Duration
}

// WithConfig lets f change the worker's configuration before the worker is
// made. The harness's defaults, which f sees, differ from worker.Config's
// for speed: Queue.Partitions 1, RetryBackoff 10ms, ShutdownTimeout 5s.
// Whatever f does, Now is the harness's Clock.
func WithConfig(f func(*worker.Config)) Option {
	return func(o *options) { o.configure = append(o.configure, f) }
}

// WithTimeout sets how long the harness waits for a state, a status or a
// job before it fails the test. Default: DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// Harness runs workflows on a real worker and a real, embedded nats-server
// for one test, and offers the test what it needs to drive them and check
// what they did. Start makes one. Its methods belong to the test that
// started it: they fail that test (t.Fatal) when something goes wrong, so
// call them from its goroutine.
//
// A Harness is bound to one workflow, the first given to Start; Workflow
// returns one bound to another. Every status published from Start on is
// recorded.
type Harness struct {
	env      *env
	workflow string
}

// env is what the harnesses of one Start share.
type env struct {
	t         testing.TB
	clock     *Clock
	conn      *queue.Conn    // the producer's connection, for FireDueTimers
	client    *client.Client // on conn
	worker    *worker.Worker
	workflows []string
	timeout   time.Duration

	mu       sync.Mutex
	statuses map[string][]contract.Status // by workflow, in arrival order
	changed  chan struct{}                // closed and replaced on every status
}

// Start starts an embedded nats-server on a free loopback port with its
// store in t.TempDir(), connects to it, and starts a worker running
// workflows with the harness's Clock as its clock. Everything stops when
// the test ends: the worker gently (Stop), then the connections and the
// server. It fails the test if any of that cannot start.
func Start(t testing.TB, workflows []worker.Workflow, opts ...Option) *Harness {
	t.Helper()
	if len(workflows) == 0 {
		t.Fatal("orderlytest: Start with no workflow")
	}
	o := options{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("orderlytest: start nats-server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	e := &env{
		t: t, clock: NewClock(), timeout: o.timeout,
		conn:     connect(t, srv.ClientURL(), "orderlytest"),
		statuses: map[string][]contract.Status{},
		changed:  make(chan struct{}),
	}
	if e.client, err = client.New(e.conn.NATS(), client.Config{}); err != nil {
		t.Fatalf("orderlytest: %v", err)
	}
	t.Cleanup(func() { _ = e.client.Close() })
	for _, wf := range workflows {
		name := wf.Name()
		e.workflows = append(e.workflows, name)
		sub, err := e.client.Subscribe(name, "", func(st contract.Status) { e.record(name, st) })
		if err != nil {
			t.Fatalf("orderlytest: subscribe to statuses of %s: %v", name, err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}

	cfg := worker.Config{
		Queue:           worker.QueueConfig{Partitions: 1},
		RetryBackoff:    10 * time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
	}
	for _, f := range o.configure {
		f(&cfg)
	}
	cfg.Now = e.clock.Now
	w, err := worker.New(dialNATS(t, srv.ClientURL(), "orderlytest-worker"), cfg, workflows...)
	if err != nil {
		t.Fatalf("orderlytest: %v", err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatalf("orderlytest: start worker: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*cfg.ShutdownTimeout)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("orderlytest: stop worker: %v", err)
		}
	})
	e.worker = w
	return &Harness{env: e, workflow: e.workflows[0]}
}

func connect(t testing.TB, url, name string) *queue.Conn {
	t.Helper()
	c, err := queue.Connect(context.Background(), queue.Config{URLs: []string{url}, Name: name})
	if err != nil {
		t.Fatalf("orderlytest: connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// dialNATS is the worker's own connection, closed when the test ends.
func dialNATS(t testing.TB, url, name string) *nats.Conn {
	t.Helper()
	nc, err := queue.Dial(context.Background(), queue.Config{URLs: []string{url}, Name: name})
	if err != nil {
		t.Fatalf("orderlytest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func (e *env) record(workflow string, st contract.Status) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.statuses[workflow] = append(e.statuses[workflow], st)
	close(e.changed)
	e.changed = make(chan struct{})
}

// snapshot returns the statuses of workflow that keep accepts, and a
// channel closed by the next status to arrive.
func (e *env) snapshot(workflow string, keep func(contract.Status) bool) ([]contract.Status, <-chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []contract.Status
	for _, st := range e.statuses[workflow] {
		if keep(st) {
			out = append(out, st)
		}
	}
	return out, e.changed
}

func (e *env) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), e.timeout)
}

// Workflow returns a harness bound to the workflow called name, sharing
// this one's server, worker, clock and records. It fails the test if Start
// was not given that workflow.
func (h *Harness) Workflow(name string) *Harness {
	h.env.t.Helper()
	if !slices.Contains(h.env.workflows, name) {
		h.env.t.Fatalf("orderlytest: no workflow %q (have %v)", name, h.env.workflows)
	}
	return &Harness{env: h.env, workflow: name}
}

// Client is the harness's producer client, for what its helpers do not
// cover (Watch, PublishAsync, DeadLetters, ...). The worker has a
// connection of its own.
func (h *Harness) Client() *client.Client { return h.env.client }

// Clock is the worker's clock.
func (h *Harness) Clock() *Clock { return h.env.clock }

// Worker is the running worker, for its Stats.
func (h *Harness) Worker() *worker.Worker { return h.env.worker }

// Send publishes event with data for key and returns its job id once the
// stream has stored it. data is encoded with encoding/json (a
// json.RawMessage goes as it is); nil sends none. opts are the producer's
// (client.WithJobID for an idempotency key). It fails the test if the event
// cannot be published; a rejection by the workflow comes later, as a
// status (see RequireRejected).
func (h *Harness) Send(key, event string, data any, opts ...client.PublishOption) string {
	h.env.t.Helper()
	ctx, cancel := h.env.ctx()
	defer cancel()
	ack, err := h.env.client.Publish(ctx, h.workflow, key, h.envelope(event, data), opts...)
	if err != nil {
		h.env.t.Fatalf("orderlytest: send %s to %s/%s: %v", event, h.workflow, key, err)
	}
	return ack.ID
}

// SendAndWait is Send followed by waiting for the job to settle (see
// client.Client.PublishAndWait); it returns the job's settled status. A
// rejected event settles too: the status's Error says why. It fails the
// test if the job does not settle within the harness's timeout.
func (h *Harness) SendAndWait(key, event string, data any, opts ...client.PublishOption) contract.Status {
	h.env.t.Helper()
	ctx, cancel := h.env.ctx()
	defer cancel()
	ack, st, err := h.env.client.PublishAndWait(ctx, h.workflow, key, h.envelope(event, data), opts...)
	if err != nil {
		h.env.t.Fatalf("orderlytest: send %s to %s/%s and wait: %v", event, h.workflow, key, err)
	}
	if ack.Duplicate {
		return st
	}
	// The harness records statuses on a subscription of its own: wait until
	// it has this one too, so Statuses agrees with what was returned.
	for {
		seen, changed := h.env.snapshot(h.workflow, func(r contract.Status) bool {
			return r.JobID == st.JobID && r.Version == st.Version && r.Settled
		})
		if len(seen) > 0 {
			return st
		}
		select {
		case <-changed:
		case <-ctx.Done():
			h.env.t.Fatalf("orderlytest: status of job %s was never recorded", st.JobID)
		}
	}
}

func (h *Harness) envelope(event string, data any) contract.Envelope {
	h.env.t.Helper()
	ev := contract.Envelope{Event: event}
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			h.env.t.Fatalf("orderlytest: encode data of %s: %v", event, err)
		}
		ev.Data = b
	}
	return ev
}

// Advance moves the clock forward by d and has every timer due by the new
// time fire, in about a second of real time (see queue.Conn.FireDueTimers):
// a 48-hour timeout fires in a test without waiting 48 hours. Periodic
// events (statemachine.Every) with a tick due within the d skipped fire
// once each, at once, however many intervals d spans, as ticks missed while
// no worker ran collapse into one (queue.Conn.FireDueTicks): advance by one
// interval at a time to see one tick each. JetStream also goes on firing
// periodic events by the real clock, so a test with a one-second interval
// sees ticks without Advance. Delayed events (client.WithDelay, WithAt)
// due by the new time fire within about a second, with their job ids.
// Recurring schedules (client.AddSchedule) fire at once, each firing that
// falls within the d skipped (at most the latest 100 of a schedule),
// with the job id the server would give it (queue.Conn.FireDueRecurring):
// an "@every" schedule counts its intervals from when it was stored, a
// cron expression fires at its times in its zone. It does not wait for
// the timers' effects; follow it with RequireState or a wait on the
// statuses.
func (h *Harness) Advance(d time.Duration) {
	h.env.t.Helper()
	from := h.env.clock.Now()
	h.env.clock.Advance(d)
	to := h.env.clock.Now()
	ctx, cancel := h.env.ctx()
	defer cancel()
	for _, wf := range h.env.workflows {
		if _, err := h.env.conn.FireDueTimers(ctx, wf, to); err != nil {
			h.env.t.Fatalf("orderlytest: advance %s: %v", d, err)
		}
		// From the time before the jump: the clock runs on meanwhile.
		if _, err := h.env.conn.FireDueTicks(ctx, wf, from, to); err != nil {
			h.env.t.Fatalf("orderlytest: advance %s: %v", d, err)
		}
		if _, err := h.env.conn.FireDueDelayed(ctx, wf, to); err != nil {
			h.env.t.Fatalf("orderlytest: advance %s: %v", d, err)
		}
		if _, err := h.env.conn.FireDueRecurring(ctx, wf, from, to); err != nil {
			h.env.t.Fatalf("orderlytest: advance %s: %v", d, err)
		}
	}
}

// State returns key's stored state; the zero StateRecord if it has none yet.
func (h *Harness) State(key string) contract.StateRecord {
	h.env.t.Helper()
	rec, err := h.readState(key)
	if err != nil && !errors.Is(err, client.ErrNoState) {
		h.env.t.Fatalf("orderlytest: state of %s/%s: %v", h.workflow, key, err)
	}
	return rec
}

func (h *Harness) readState(key string) (contract.StateRecord, error) {
	ctx, cancel := h.env.ctx()
	defer cancel()
	return h.env.client.State(ctx, h.workflow, key)
}

// RequireState waits until key's stored state is state, and returns the
// record. It fails the test, with the last state seen and the key's
// statuses, if that does not happen within the harness's timeout.
func (h *Harness) RequireState(key string, state statemachine.State) contract.StateRecord {
	h.env.t.Helper()
	deadline := time.NewTimer(h.env.timeout)
	defer deadline.Stop()
	poll := time.NewTicker(pollEvery)
	defer poll.Stop()
	for {
		rec, err := h.readState(key)
		// The state is committed before its status is published: wait for
		// the status too, so Statuses is up to date when this returns.
		announced, changed := h.env.snapshot(h.workflow, func(st contract.Status) bool {
			return st.Key == key && st.Version == rec.Version && st.To == rec.State
		})
		if err == nil && rec.State == string(state) && len(announced) > 0 {
			return rec
		}
		select {
		case <-changed:
		case <-poll.C:
		case <-deadline.C:
			last := rec.State
			if err != nil {
				last = err.Error()
			}
			h.env.t.Fatalf("orderlytest: %s/%s did not reach state %q within %s; last seen: %s; statuses:\n%s",
				h.workflow, key, state, h.env.timeout, last, format(h.Statuses(key)))
		}
	}
}

// RequireRejected waits for a status of job jobID with an error of the given
// code (invalid_transition, guard_refused, invalid_data, internal_event,
// action_failed, ...; see contract.StatusError) and returns it. It fails the
// test if the job settles without one, or if none comes within the
// harness's timeout.
func (h *Harness) RequireRejected(jobID, code string) contract.Status {
	h.env.t.Helper()
	deadline := time.NewTimer(h.env.timeout)
	defer deadline.Stop()
	for {
		job, changed := h.env.snapshot(h.workflow, func(st contract.Status) bool { return st.JobID == jobID })
		settled := false
		for _, st := range job {
			if st.Error != nil && st.Error.Code == code {
				return st
			}
			settled = settled || st.Settled
		}
		if settled {
			h.env.t.Fatalf("orderlytest: job %s settled with no %s error; statuses:\n%s", jobID, code, format(job))
		}
		select {
		case <-changed:
		case <-deadline.C:
			h.env.t.Fatalf("orderlytest: no %s error for job %s within %s; statuses:\n%s", code, jobID, h.env.timeout, format(job))
		}
	}
}

// Statuses returns the statuses of key seen so far, oldest first.
func (h *Harness) Statuses(key string) []contract.Status {
	sts, _ := h.env.snapshot(h.workflow, func(st contract.Status) bool { return st.Key == key })
	return sts
}

func format(sts []contract.Status) string {
	if len(sts) == 0 {
		return "  (none)"
	}
	var b strings.Builder
	for _, st := range sts {
		fmt.Fprintf(&b, "  %s job %s: %s -> %s v%d settled=%v", st.Event, st.JobID, st.From, st.To, st.Version, st.Settled)
		if st.Error != nil {
			fmt.Fprintf(&b, " error=%s", st.Error)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
