package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/orderly-dev/orderly/contract"
)

const dlqHeaderPrefix = "orderly-dlq-"

// ErrNoDeadLetter: no dead letter has the given sequence (never, or already
// replayed or expired).
var ErrNoDeadLetter = errors.New("no such dead letter")

// DeadLetterEntry is one stored dead letter.
type DeadLetterEntry struct {
	// Sequence is the entry's sequence in the dead-letter stream: its id for
	// Replay.
	Sequence uint64
	// Workflow and Key say whose event it was; Key is the last token of the
	// original subject and may break the contract's key rule.
	Workflow, Key string
	// JobID is the original's job id (Nats-Msg-Id), empty if it had none.
	JobID string
	// Reason says why the event was dead-lettered.
	Reason string
	// Subject is the subject the original was stored under.
	Subject string
	// Data is the original body.
	Data []byte
	// Headers are the original's headers, Nats-Msg-Id included; JetStream's
	// other Nats-* control headers are not kept (see DeadLetter).
	Headers map[string][]string
	// At is when the event was dead-lettered.
	At time.Time
	// Delivered is how many times the original had been delivered.
	Delivered uint64
}

// DeadLetter stores a copy of m (its body and headers, plus the
// Orderly-Dlq-* headers) on orderly.dlq.<workflow>.<key> and returns once
// JetStream has acknowledged it; the caller then Terms m. JetStream's
// Nats-* control headers (Nats-Expected-*, Nats-TTL, Nats-Rollup, ...) are
// left out, since on the copy they would act on the dead-letter stream; the
// job id is kept as HeaderDLQJobID. m.Key is used as it is, even if it breaks
// the key rule: it came from a subject, so it is a valid subject token.
func (c *Conn) DeadLetter(ctx context.Context, workflow string, m *Msg, reason string) error {
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return err
	}
	subject, orig := contract.EventSubject(workflow, m.Key), nats.Header(nil)
	if m.raw != nil { // nil for a Msg not from a Puller
		subject, orig = m.raw.Subject(), m.raw.Headers()
	}
	msg := deadLetterMsg(workflow, m.Key, subject, orig, m.Data, m.ID, m.Sequence, m.Delivered, reason)
	return c.publishDeadLetter(ctx, msg)
}

// deadLetterMsg is the dead-letter copy of the event stored as seq under
// subject, for key: see DeadLetter.
func deadLetterMsg(workflow, key, subject string, orig nats.Header, data []byte, id string, seq, delivered uint64, reason string) *nats.Msg {
	msg := nats.NewMsg(contract.DeadLetterSubject(workflow, key))
	msg.Data = data
	copyHeaders(msg.Header, orig)
	if id != "" {
		msg.Header.Set(contract.HeaderDLQJobID, id)
	}
	if seq != 0 {
		// The copy's own job id is the original's sequence and job id, so
		// that dead-lettering one event twice (say, its Term was lost) stores
		// it once, while two events that share a job id are both kept.
		msg.Header.Set(contract.HeaderJobID, strconv.FormatUint(seq, 10)+"."+id)
	}
	msg.Header.Set(contract.HeaderDLQReason, headerValue(reason))
	msg.Header.Set(contract.HeaderDLQSubject, subject)
	msg.Header.Set(contract.HeaderDLQSequence, strconv.FormatUint(seq, 10))
	msg.Header.Set(contract.HeaderDLQDelivered, strconv.FormatUint(delivered, 10))
	msg.Header.Set(contract.HeaderDLQAt, time.Now().UTC().Format(time.RFC3339Nano))
	return msg
}

// ErrDeadLettersFull: the dead-letter stream holds its DeadLetterMaxBytes;
// nothing was stored. Replaying or removing dead letters makes room.
var ErrDeadLettersFull = errors.New("dead letters full")

func (c *Conn) publishDeadLetter(ctx context.Context, msg *nats.Msg) error {
	_, err := c.js.PublishMsg(ctx, msg)
	if err == nil {
		return nil
	}
	if err = publishError(msg.Subject, err); errors.Is(err, ErrQueueFull) {
		return fmt.Errorf("queue: dead-letter to %s: %w: the stream holds its limit (Spec.DeadLetterMaxBytes); replay or remove dead letters to make room",
			msg.Subject, ErrDeadLettersFull)
	}
	return err
}

// copyHeaders adds src's headers to dst, except JetStream's Nats-* control
// headers and Orderly's dead-letter headers.
func copyHeaders(dst, src nats.Header) {
	for k, vs := range src {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "nats-") || strings.HasPrefix(lk, dlqHeaderPrefix) {
			continue
		}
		dst[k] = append([]string(nil), vs...)
	}
}

// headerValue makes s safe as a header value: one line, at most 1 KiB.
func headerValue(s string) string {
	s = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(s)
	if len(s) > 1024 {
		s = strings.ToValidUTF8(s[:1024], "")
	}
	return s
}

// DeadLetters lists up to limit dead letters of workflow, oldest first
// (limit <= 0: all of them). It reads the stream message by message and
// leaves no consumer behind.
func (c *Conn) DeadLetters(ctx context.Context, workflow string, limit int) ([]DeadLetterEntry, error) {
	s, err := c.dlqStream(ctx, workflow)
	if err != nil {
		return nil, err
	}
	var out []DeadLetterEntry
	err = eachDeadLetter(ctx, s, workflow, func(e DeadLetterEntry) bool {
		out = append(out, e)
		return limit <= 0 || len(out) < limit
	})
	return out, err
}

// eachDeadLetter calls f with each dead letter stored when it starts, oldest
// first, until f returns false.
func eachDeadLetter(ctx context.Context, s jetstream.Stream, workflow string, f func(DeadLetterEntry) bool) error {
	state := s.CachedInfo().State
	filter := jetstream.WithGetMsgSubject(contract.DeadLetterSubject(workflow, "*"))
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq; {
		raw, err := s.GetMsg(ctx, seq, filter)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("queue: dead letters of %s: %w", workflow, err)
		}
		if raw.Sequence > state.LastSeq || !f(entryOf(workflow, raw)) {
			return nil
		}
		seq = raw.Sequence + 1
	}
	return nil
}

func (c *Conn) dlqStream(ctx context.Context, workflow string) (jetstream.Stream, error) {
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, err
	}
	s, err := c.js.Stream(ctx, contract.DeadLetterStream(workflow))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("queue: dead letters of %s: %w", workflow, ErrNotProvisioned)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: dead letters of %s: %w", workflow, err)
	}
	return s, nil
}

func entryOf(workflow string, raw *jetstream.RawStreamMsg) DeadLetterEntry {
	h := raw.Header
	e := DeadLetterEntry{
		Sequence: raw.Sequence,
		Workflow: workflow,
		Key:      contract.KeyOfSubject(raw.Subject),
		JobID:    h.Get(contract.HeaderDLQJobID),
		Reason:   h.Get(contract.HeaderDLQReason),
		Subject:  h.Get(contract.HeaderDLQSubject),
		Data:     raw.Data,
		Headers:  nats.Header{},
		At:       raw.Time,
	}
	copyHeaders(e.Headers, h)
	if e.JobID != "" {
		e.Headers[contract.HeaderJobID] = []string{e.JobID}
	}
	if at, err := time.Parse(time.RFC3339Nano, h.Get(contract.HeaderDLQAt)); err == nil {
		e.At = at
	}
	e.Delivered, _ = strconv.ParseUint(h.Get(contract.HeaderDLQDelivered), 10, 64)
	return e
}

// Replay republishes dead letter seq's body, as it is, to its key's events
// subject with its original headers and the new job id
// "<original job id>.replay.<seq>" ("replay.<seq>" when it had none), then
// deletes the dead letter. The body is not checked: an operator may replay
// what the worker found malformed. The new id is the same on every attempt,
// so retrying a Replay that failed half-way does not store the event twice
// (within the duplicate window). An unknown seq gives ErrNoDeadLetter; a key
// that breaks the key rule cannot be replayed (ErrInvalidKey).
func (c *Conn) Replay(ctx context.Context, workflow string, seq uint64) (PubAck, error) {
	s, err := c.dlqStream(ctx, workflow)
	if err != nil {
		return PubAck{}, err
	}
	raw, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return PubAck{}, fmt.Errorf("queue: replay %s dead letter %d: %w", workflow, seq, ErrNoDeadLetter)
	}
	if err != nil {
		return PubAck{}, fmt.Errorf("queue: replay %s dead letter %d: %w", workflow, seq, err)
	}
	return c.replay(ctx, s, entryOf(workflow, raw))
}

func (c *Conn) replay(ctx context.Context, s jetstream.Stream, e DeadLetterEntry) (PubAck, error) {
	workflow, seq := e.Workflow, e.Sequence
	if err := contract.ValidateKey(e.Key); err != nil {
		return PubAck{}, fmt.Errorf("queue: replay %s dead letter %d: %w", workflow, seq, err)
	}
	id := "replay." + strconv.FormatUint(seq, 10)
	if e.JobID != "" {
		id = e.JobID + "." + id
	}
	msg := nats.NewMsg(contract.EventSubject(workflow, e.Key))
	msg.Data = e.Data
	copyHeaders(msg.Header, e.Headers)
	msg.Header.Set(contract.HeaderJobID, id)
	ack, err := c.js.PublishMsg(ctx, msg)
	if err != nil {
		return PubAck{}, fmt.Errorf("queue: replay %s dead letter %d: %w", workflow, seq, publishError(msg.Subject, err))
	}
	res := PubAck{ID: id, Sequence: ack.Sequence, Duplicate: ack.Duplicate}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		// Gone already: a concurrent Replay of seq won (and its publish and
		// ours were one, by the job id).
		if _, gerr := s.GetMsg(ctx, seq); !errors.Is(gerr, jetstream.ErrMsgNotFound) {
			return res, fmt.Errorf("queue: replayed %s dead letter %d as job %s but could not delete it: %w", workflow, seq, id, err)
		}
	}
	return res, nil
}

// ReplayAll replays every dead letter of workflow stored when it starts,
// oldest first. It goes on past a dead letter that fails and returns how many
// were replayed and the first error; it stops early when ctx ends or the
// queue is full or gone.
func (c *Conn) ReplayAll(ctx context.Context, workflow string) (int, error) {
	s, err := c.dlqStream(ctx, workflow)
	if err != nil {
		return 0, err
	}
	var (
		n        int
		firstErr error
	)
	err = eachDeadLetter(ctx, s, workflow, func(e DeadLetterEntry) bool {
		_, err := c.replay(ctx, s, e)
		switch {
		case err == nil:
			n++
		case firstErr == nil:
			firstErr = err
		}
		return ctx.Err() == nil && !errors.Is(err, ErrQueueFull) && !errors.Is(err, ErrNotProvisioned)
	})
	if firstErr == nil {
		firstErr = err
	}
	return n, firstErr
}
