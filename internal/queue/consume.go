package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/contract"
)

// Msg is one delivered event. Exactly one of Ack, Nak, Term must be called
// for every Msg: that frees its place in the puller's bound.
type Msg struct {
	// Key is the entity key, the last token of the subject.
	Key string
	// Partition is the partition the event was pulled from.
	Partition int
	// ID is the job id (Nats-Msg-Id), empty if the producer set none; for
	// a fired delayed event its Orderly-Job-Id, for a firing of a
	// recurring schedule the id made of its name and fire time.
	ID string
	// Made says the producer made ID for this one publish
	// (contract.HeaderJobMade): it needs no claim. Never set on a fired
	// delayed or recurring event.
	Made bool
	// Sequence is the event's stream sequence: per partition, the order.
	Sequence uint64
	// Delivered counts deliveries of this event, 1 on the first (and on the
	// first after a rewind of the partition, which resets the count).
	Delivered uint64
	// Stored is when the events stream stored the event (the server's
	// clock); zero if the delivery carried no metadata.
	Stored time.Time
	// Data is the raw message body.
	Data []byte
	// Span is the worker's span of the event while it handles it; nil when
	// it does not trace. The adapter neither sets nor reads it.
	Span trace.Span

	raw jetstream.Msg
	// again is the event's delivery since a rewind of the partition, if
	// it came while m was held: acks, naks and progress go to it (see
	// Puller.copyOf).
	again       atomic.Pointer[redelivery]
	timer       bool   // a fired timer: see Timer
	delayed     bool   // a fired delayed event: see Delayed
	firedSeq    uint64 // what fired: its sequence in the schedules stream
	consumerSeq uint64
	finished    atomic.Bool
	puller      *Puller // nil for a Msg not from a Puller
}

type redelivery struct{ raw jetstream.Msg }

// handle is the delivery that acks, naks and progress go to.
func (m *Msg) handle() jetstream.Msg {
	if d := m.again.Load(); d != nil {
		return d.raw
	}
	return m.raw
}

// Headers returns the message headers (read-only); nil for a Msg not from
// a Puller.
func (m *Msg) Headers() map[string][]string {
	if m.raw == nil {
		return nil
	}
	return m.raw.Headers()
}

// Subject is the subject the event is stored under; empty for a Msg not
// from a Puller.
func (m *Msg) Subject() string {
	if m.raw == nil {
		return ""
	}
	return m.raw.Subject()
}

func (m *Msg) finish() bool {
	if m.puller != nil {
		return m.puller.finish(m)
	}
	return !m.finished.Swap(true)
}

// ErrAlreadyFinished is returned by a second Ack, Nak or Term of one Msg.
var ErrAlreadyFinished = errors.New("queue: message already acknowledged")

// Ack tells JetStream the event is done; it is removed from the stream. The
// ack is sent without waiting for a reply, so acks pipeline.
func (m *Msg) Ack() error {
	if !m.finish() {
		return ErrAlreadyFinished
	}
	return m.handle().Ack()
}

// Nak hands the event back for redelivery after delay (0: at once).
func (m *Msg) Nak(delay time.Duration) error {
	if !m.finish() {
		return ErrAlreadyFinished
	}
	if delay <= 0 {
		return m.handle().Nak()
	}
	return m.handle().NakWithDelay(delay)
}

// Term stops redelivery of the event for good.
func (m *Msg) Term(reason string) error {
	if !m.finish() {
		return ErrAlreadyFinished
	}
	return m.handle().TermWithReason(reason)
}

// LoseAck finishes m without a word to the server, as an ack lost on its
// way does: the event comes again after the ack wait. For tests.
func (m *Msg) LoseAck() { m.finish() }

// InProgress resets the event's ack timer while it is still being worked
// on; after Ack, Nak or Term it sends nothing.
func (m *Msg) InProgress() error {
	if m.finished.Load() {
		return ErrAlreadyFinished
	}
	return m.handle().InProgress()
}

// PullConfig configures a Puller. A zero field means its default.
type PullConfig struct {
	// Workflow and Partition name the consumer to pull. Required.
	Workflow  string
	Partition int // The partition to pull.
	// Batch is the most messages asked for in one pull request. Default: 256.
	Batch int
	// MaxInFlight is the most messages held at once: delivered and not yet
	// Ack'ed, Nak'ed or Term'ed. The puller never asks for more than the room
	// left, so nothing waits in a client buffer beyond it. Default: Batch.
	MaxInFlight int
	// MaxWait is how long one pull request waits for messages; it also bounds
	// how long a soft Stop waits for an idle puller. Default: 1s.
	MaxWait time.Duration
	// OnError is called with errors of pull requests (the puller retries
	// them). Default: ignore.
	OnError func(error)
	// OnPull is called after each pull request with the number of messages it
	// delivered. Default: none.
	OnPull func(n int)
	// Shared says other clients pull the same consumer at once, which needs
	// a consumer provisioned with Spec.Unpinned. By default a
	// puller takes itself for its partition's only client and keeps the
	// partition in stream order: deliveries lost in transit (a server
	// restart, a cut connection) show as a gap in the consumer's delivery
	// sequence or a failed pull, and JetStream would redeliver them only
	// after the ack wait, behind newer events. The puller then rewinds the
	// consumer to its ack floor, so everything unacknowledged comes again
	// in stream order, and drops the copies of the events it still holds
	// (they keep their place in their keys' order). It rewinds at
	// start too (see Handover), and whenever the pin moves to it from
	// another client, so that whatever that client held unacknowledged comes
	// to it again, in order, before anything newer.
	Shared bool
	// Handover says another client may still be pulling the partition,
	// finishing what it holds before it lets go. The puller then rewinds
	// when the pin first comes to it, not at start: a rewind while the
	// other still delivers would let it apply events after newer ones.
	Handover bool
}

func (c PullConfig) withDefaults() PullConfig {
	if c.Batch <= 0 {
		c.Batch = 256
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = c.Batch
	}
	if c.MaxWait <= 0 {
		c.MaxWait = time.Second
	}
	return c
}

// Handler receives each pulled message, one at a time and in the order
// delivered. It may block: while it does, nothing more is pulled. ctx ends
// on a hard stop.
type Handler func(ctx context.Context, m *Msg)

// Puller pulls one partition's consumer in bounded batches.
type Puller struct {
	cfg     PullConfig
	cons    jetstream.Consumer
	handler Handler

	credits chan struct{} // one token per message held or asked for
	held    atomic.Int64  // messages delivered and not finished

	// byStreamSeq holds the messages held (delivered, not finished) by
	// their stream sequence, to know a rewind's copies of them (copyOf).
	heldMu      sync.Mutex
	byStreamSeq map[uint64]*Msg

	// legacyUntil: timers stored under client subjects up to then are
	// still timers (see legacyTimer); zero: none are.
	legacyUntil time.Time

	rewind    bool        // a delivery was lost: rewind before pulling again
	asked     atomic.Bool // Rewind was called: rewind as soon as the puller can
	delivered uint64      // consumer sequence of the last delivery, 0 after a rewind
	counted   bool        // delivered is checked: after a rewind, which restarts the count at 1
	unchecked bool        // delivered something since the consumer was last compared (see lostTail)
	checkedAt time.Time   // when the consumer was last compared
	pin       string      // the pin id this puller holds the partition under
	pinned    bool        // a pin was seen since start
	conn      *Conn
	stop      chan struct{} // closed by Stop: pull no more
	once      sync.Once
	cancel    context.CancelFunc
	done      chan struct{}
}

// Pull starts pulling cfg's partition and handing messages to h until Stop
// or until ctx ends.
func (c *Conn) Pull(ctx context.Context, cfg PullConfig, h Handler) (*Puller, error) {
	cfg = cfg.withDefaults()
	cons, err := c.js.Consumer(ctx, contract.EventsStream(cfg.Workflow), consumerName(cfg.Workflow, cfg.Partition))
	if err != nil {
		return nil, fmt.Errorf("queue: consumer of %s partition %d: %w", cfg.Workflow, cfg.Partition, err)
	}
	stream, err := c.js.Stream(ctx, contract.EventsStream(cfg.Workflow))
	if err != nil {
		return nil, fmt.Errorf("queue: stream of %s: %w", cfg.Workflow, err)
	}
	var legacyUntil time.Time
	if v, ok := stream.CachedInfo().Config.Metadata[metaLegacyTimersUntil]; ok {
		legacyUntil, _ = time.Parse(time.RFC3339Nano, v)
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Puller{
		cfg:     cfg,
		cons:    cons,
		handler: h,
		credits: make(chan struct{}, cfg.MaxInFlight),
		stop:    make(chan struct{}),
		cancel:  cancel,
		done:    make(chan struct{}),
		conn:    c,
		rewind:  !cfg.Shared && !cfg.Handover,

		legacyUntil: legacyUntil,
	}
	go p.run(ctx)
	return p, nil
}

// Stop stops pulling: the pull request in progress finishes (at most MaxWait)
// and its messages still reach the handler; then Stop returns. Messages the
// handler holds stay its to finish. If ctx ends first, the puller is stopped
// hard: the handler's context is cancelled. Stop is safe to call twice.
func (p *Puller) Stop(ctx context.Context) error {
	p.once.Do(func() { close(p.stop) })
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.cancel()
		<-p.done
		return ctx.Err()
	}
}

// Rewind asks the puller to rewind its consumer to the ack floor once its
// pull request in flight has ended, as it does after a lost delivery:
// whatever the consumer delivered and nobody acknowledged comes again, in
// stream order (but for the copies of what the puller holds), and what
// arrives meanwhile waits for it. The worker asks when the consumer's
// leader changes: a new leader may not know of deliveries its predecessor
// made just before it went (nats-server keeps a consumer's state by
// replication, and one delivery not yet replicated is forgotten), and would
// never deliver those events again. A shared puller ignores it.
func (p *Puller) Rewind() { p.asked.Store(true) }

// Stopped is closed once the puller has stopped.
func (p *Puller) Stopped() <-chan struct{} { return p.done }

// InFlight is the number of messages delivered and not yet finished.
func (p *Puller) InFlight() int { return int(p.held.Load()) }

func (p *Puller) release() { <-p.credits }

// finish marks m finished and releases its place in the bound; false if it
// was finished already. Under heldMu, so that a copy of m (copyOf) either
// comes before and takes over m's ack, or after and is an event of its own.
func (p *Puller) finish(m *Msg) bool {
	p.heldMu.Lock()
	if m.finished.Swap(true) {
		p.heldMu.Unlock()
		return false
	}
	if p.byStreamSeq[m.Sequence] == m {
		delete(p.byStreamSeq, m.Sequence)
	}
	p.heldMu.Unlock()
	p.held.Add(-1)
	p.release()
	return true
}

// copyOf reports whether m delivers again an event the puller still holds
// (a rewind delivers everything unacknowledged, held events too), and if
// so hands m's delivery to the held one, for its ack, nak or progress to
// name: the rewound consumer counts deliveries from 1 again and ignores a
// nak of a delivery sequence it has not reached. The held event keeps its
// place in its key's order; m is dropped, neither acked nor nak'ed.
// Otherwise it records m as held.
func (p *Puller) copyOf(m *Msg) bool {
	p.heldMu.Lock()
	defer p.heldMu.Unlock()
	if held := p.byStreamSeq[m.Sequence]; held != nil {
		held.again.Store(&redelivery{raw: m.raw})
		return true
	}
	if p.byStreamSeq == nil {
		p.byStreamSeq = map[uint64]*Msg{}
	}
	p.byStreamSeq[m.Sequence] = m
	return false
}

// acquire waits for room for at least one message and takes as much room as
// there is, up to Batch.
func (p *Puller) acquire(ctx context.Context) int {
	select {
	case <-p.stop:
		return 0
	case <-ctx.Done():
		return 0
	default:
	}
	select {
	case p.credits <- struct{}{}:
	case <-p.stop:
		return 0
	case <-ctx.Done():
		return 0
	}
	n := 1
	for n < p.cfg.Batch {
		select {
		case p.credits <- struct{}{}:
			n++
		default:
			return n
		}
	}
	return n
}

func (p *Puller) run(ctx context.Context) {
	defer close(p.done)
	defer p.cancel()
	retry := 100 * time.Millisecond
	for {
		if p.asked.Swap(false) {
			p.rewind = !p.cfg.Shared
		}
		if p.rewind {
			if !p.rewindConsumer(ctx) {
				return
			}
		}
		n := p.acquire(ctx)
		if n == 0 {
			return
		}
		session := p.conn.session()
		got, err := p.pull(ctx, n)
		for range n - got { // room asked for and not delivered
			p.release()
		}
		if !p.cfg.Shared && (session < 0 || p.conn.session() != session) {
			// The connection was lost while the request was out (a NATS
			// node killed under the worker): what the server sent on it may
			// be lost with it, and if nothing later comes to show the gap,
			// those events would wait out the ack wait (30s). Rewind.
			p.rewind = true
		}
		if err == nil && !p.cfg.Shared && p.counted && !p.rewind {
			switch {
			case got > 0:
				p.unchecked = true
			case p.unchecked || time.Since(p.checkedAt) >= quietCheckEvery:
				// The partition went quiet: make sure nothing before the
				// quiet was lost on the way (see lostTail).
				lost, checked := p.lostTail(ctx)
				p.unchecked = !checked
				p.rewind = lost
			}
		}
		if err != nil && ctx.Err() == nil {
			// What the failed request delivered may be lost on the way.
			// Not so when the server refused it for a pin it no longer
			// knows (its consumer's leader changed) right after a rewind
			// of ours with nothing delivered since: the pin comes new with
			// the next request, and the consumer's first delivery with it.
			refused := got == 0 && errors.Is(err, jetstream.ErrPinIDMismatch) && p.counted && p.delivered == 0
			p.rewind = !p.cfg.Shared && (p.rewind || !refused)
			if p.cfg.OnError != nil {
				p.cfg.OnError(err)
			}
			// The server may be away; wait before asking again, but stay
			// stoppable.
			select {
			case <-time.After(retry):
				retry = min(2*retry, maxPullRetry)
			case <-p.stop:
				return
			case <-ctx.Done():
				return
			}
			continue
		}
		retry = 100 * time.Millisecond
	}
}

// lostTail compares the consumer's count of deliveries with the last one
// this puller saw, once the partition has gone quiet (its last pull
// delivered nothing): more means some were lost on the way, and with
// nothing after them to show the gap they would wait out the ack wait
// (30s). That happens on a loaded machine: a pull request's answer comes
// later than nats.go waits for it, and what the server delivers to the
// request meanwhile goes nowhere (seen in BenchmarkScaleOut: the last
// events of a partition held 30s). checked is false if the consumer could
// not be asked; the next quiet pull asks again.
func (p *Puller) lostTail(ctx context.Context) (lost, checked bool) {
	ctx, cancel := context.WithTimeout(ctx, recoveryTimeout)
	defer cancel()
	info, err := p.cons.Info(ctx)
	if err != nil {
		return false, false
	}
	p.checkedAt = time.Now()
	return info.Delivered.Consumer > p.delivered, true
}

// quietCheckEvery is how often a quiet partition compares the consumer
// with what it saw (lostTail) besides once after each delivery: a request
// given up on can still take deliveries after the check.
const quietCheckEvery = 10 * time.Second

// maxPullRetry is the longest wait before a failed pull request is sent
// again. Requests fail at once while the partition's consumer has no
// leader (a NATS node lost): retry often enough that the partition goes on
// soon after the cluster has elected a new one.
const maxPullRetry = 500 * time.Millisecond

// pull sends one pull request for n messages and hands each to the handler as
// it arrives, so a small batch is not held back waiting for a full one. It
// returns once nats.go's goroutine for the request has ended: the request's
// context ends it at once when the puller gives up on the request.
func (p *Puller) pull(ctx context.Context, n int) (int, error) {
	// The request expires on the server after MaxWait: FetchContext takes
	// the expiry from the deadline, less a tenth of it (at most 1s) for the
	// answer to come back.
	rctx, cancel := context.WithTimeout(ctx, p.cfg.MaxWait+min(p.cfg.MaxWait/9, time.Second))
	defer cancel()
	opts := []jetstream.FetchOpt{jetstream.FetchContext(rctx)}
	if !p.cfg.Shared {
		opts = append(opts, jetstream.FetchPriorityGroup(PriorityGroup))
	}
	batch, err := p.cons.Fetch(n, opts...)
	if err != nil {
		return 0, err
	}
	got := 0
	msgs := batch.Messages()
	// A fetch whose connection was closed under it may never close its
	// channel: give up on it when nothing arrives for longer than the
	// request could last, or on a hard stop.
	idle := p.cfg.MaxWait + 5*time.Second
	wait := time.NewTimer(idle)
	defer wait.Stop()
	for {
		var raw jetstream.Msg
		ok, abandoned := false, false
		select {
		case raw, ok = <-msgs:
		case <-ctx.Done():
			abandoned = true
		case <-wait.C:
			abandoned = true
		}
		if abandoned {
			// End the request's goroutine and wait for it; whatever it still
			// carried is lost to this puller (and rewound).
			cancel()
			for range msgs {
			}
			return got, errAbandoned
		}
		if !ok {
			break
		}
		wait.Reset(idle)
		got++
		if ctx.Err() != nil {
			// Stopped hard: hand the rest back at once rather than let
			// them wait out their ack timers.
			_ = raw.Nak()
			p.release()
			continue
		}
		m := p.wrap(raw)
		if p.asked.Swap(false) {
			p.rewind = !p.cfg.Shared
		}
		if !p.cfg.Shared {
			pin := raw.Headers().Get("Nats-Pin-Id")
			// The first pin after a rewind at start is no news; any other
			// new pin means another client held the partition meanwhile.
			newPin := pin != "" && pin != p.pin && (p.pinned || p.cfg.Handover)
			if pin != "" && !p.pinned {
				p.pinned = true
				p.pin = pin
			}
			if newPin && p.counted && p.delivered == 0 && m.consumerSeq == 1 {
				// The first delivery since this puller's own rewind, and the
				// consumer's first: nobody else took anything since, so
				// there is nothing to wait for. The pin is new because the
				// consumer's new leader (a NATS node lost) does not know the
				// old one; a rewind for it would only come back here.
				p.pin, newPin = pin, false
			}
			if p.rewind || newPin || (p.counted || p.delivered != 0) && m.consumerSeq != p.delivered+1 {
				// A new pin, or a gap: something before m may be held by
				// the partition's previous client, or was lost. m and what
				// follows come again after the rewind. The first delivery
				// after a rewind must be the consumer's first, too: a pull
				// request that outlived the rewind on the server (one nats.go
				// gave up on by its own timer, say) may have taken the
				// events before m, and they would come back only after m.
				if newPin {
					p.pin = pin
				}
				p.rewind = true
				m.finish()
				continue
			}
			p.delivered = m.consumerSeq
			if m.Sequence != 0 && p.copyOf(m) {
				// Its place in the bound goes; the held event's stays.
				m.puller = nil
				m.finished.Store(true)
				p.held.Add(-1)
				p.release()
				continue
			}
		}
		p.handler(ctx, m)
	}
	if p.cfg.OnPull != nil {
		p.cfg.OnPull(got)
	}
	err = batch.Error()
	if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// The request expired with nothing more to deliver; its end did not
		// come back in time, or the request's deadline beat it.
		err = nil
	}
	return got, err
}

// errAbandoned: a pull request's messages stopped coming without the request
// ending; whatever it still carried is lost to this puller (and rewound).
var errAbandoned = errors.New("queue: pull request abandoned")

func (p *Puller) wrap(raw jetstream.Msg) *Msg {
	m := &Msg{
		Key:       contract.KeyOfSubject(raw.Subject()),
		Partition: p.cfg.Partition,
		ID:        raw.Headers().Get(contract.HeaderJobID),
		Data:      raw.Data(),
		raw:       raw,
		puller:    p,
	}
	p.held.Add(1)
	var stored time.Time
	if md, err := raw.Metadata(); err == nil {
		m.Sequence = md.Sequence.Stream
		m.consumerSeq = md.Sequence.Consumer
		m.Delivered = md.NumDelivered
		stored = md.Timestamp
		m.Stored = stored
	}
	m.timer = isTimerSubject(p.cfg.Workflow, raw.Subject()) ||
		!p.legacyUntil.IsZero() && legacyTimer(raw.Headers(), p.cfg.Workflow, stored, p.legacyUntil)
	if !m.timer && !p.markScheduled(m) {
		m.Made = m.ID != "" && raw.Headers().Get(contract.HeaderJobMade) == "true"
	}
	return m
}

// rewindConsumer resets the consumer to its ack floor, retrying until it
// is done. False if the puller was stopped meanwhile. It does not wait for
// the events the puller holds (those waiting behind a key's slow work may
// be held for minutes): their copies are known and dropped (copyOf).
func (p *Puller) rewindConsumer(ctx context.Context) bool {
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, maxPullRetry) {
		err := p.conn.resetConsumer(ctx, contract.EventsStream(p.cfg.Workflow), consumerName(p.cfg.Workflow, p.cfg.Partition))
		if err == nil {
			// unchecked: what the rewind delivers again may go to a
			// request of ours that nats.go has given up on, as any
			// delivery may (see lostTail).
			p.rewind, p.delivered, p.counted, p.unchecked = false, 0, true, true
			return true
		}
		if p.cfg.OnError != nil {
			p.cfg.OnError(fmt.Errorf("rewind partition %d: %w", p.cfg.Partition, err))
		}
		select {
		case <-time.After(wait):
		case <-p.stop:
			return false
		case <-ctx.Done():
			return false
		}
	}
}
