package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsapi"
)

// ErrNoDeadLetter: no dead letter has the given sequence (never, or already
// replayed).
var ErrNoDeadLetter = errors.New("no such dead letter")

// DeadLetter is one stored dead letter: an event the worker could never
// process, with the reason.
type DeadLetter struct {
	// Sequence is the dead letter's sequence in the dead-letter stream: its
	// id for Replay.
	Sequence uint64
	// Workflow and Key say whose event it was; Key is the last token of the
	// original subject and may break the contract's key rule.
	Workflow, Key string
	// JobID is the original's job id (Nats-Msg-Id), empty if it had none.
	JobID string
	// Reason says why the event was dead-lettered: "<code>: <message>",
	// the code one of contract's Code constants.
	Reason string
	// Subject is the subject the original was stored under.
	Subject string
	// Data is the original body.
	Data []byte
	// Headers are the original's headers, Nats-Msg-Id included;
	// JetStream's other Nats-* control headers are not kept. A worker that
	// traces puts its dead-lettering's span in traceparent and tracestate
	// (the same trace as the original's).
	Headers map[string][]string
	// At is when the event was dead-lettered.
	At time.Time
	// Delivered is how many times the original had been delivered.
	Delivered uint64
}

// DeadLetters lists up to limit dead letters of workflow, oldest first
// (limit <= 0: all of them). It reads the stream message by message and
// leaves no consumer behind. Each request is bounded by Config.Timeout, the
// whole only by ctx.
func (c *Client) DeadLetters(ctx context.Context, workflow string, limit int) ([]DeadLetter, error) {
	s, err := c.dlqStream(ctx, workflow)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	err = eachDeadLetter(ctx, s, workflow, func(e DeadLetter) bool {
		out = append(out, e)
		return limit <= 0 || len(out) < limit
	})
	return out, err
}

// eachDeadLetter calls f with each dead letter stored when it starts, oldest
// first, until f returns false.
func eachDeadLetter(ctx context.Context, s jetstream.Stream, workflow string, f func(DeadLetter) bool) error {
	state := s.CachedInfo().State
	filter := jetstream.WithGetMsgSubject(contract.DeadLetterSubject(workflow, "*"))
	for seq := state.FirstSeq; state.Msgs > 0 && seq <= state.LastSeq; {
		raw, err := s.GetMsg(ctx, seq, filter)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("client: dead letters of %s: %w", workflow, err)
		}
		if raw.Sequence > state.LastSeq || !f(deadLetterOf(workflow, raw)) {
			return nil
		}
		seq = raw.Sequence + 1
	}
	return nil
}

func (c *Client) dlqStream(ctx context.Context, workflow string) (jetstream.Stream, error) {
	if c.isDone() {
		return nil, ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, err
	}
	s, err := c.js.Stream(ctx, contract.DeadLetterStream(workflow))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("client: dead letters of %s: %w", workflow, ErrNotProvisioned)
	}
	if err != nil {
		return nil, fmt.Errorf("client: dead letters of %s: %w", workflow, err)
	}
	return s, nil
}

func deadLetterOf(workflow string, raw *jetstream.RawStreamMsg) DeadLetter {
	h := raw.Header
	e := DeadLetter{
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
	jsapi.CopyHeaders(e.Headers, h)
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
// that breaks the key rule cannot be replayed (contract.ErrInvalidKey).
func (c *Client) Replay(ctx context.Context, workflow string, seq uint64) (PubAck, error) {
	s, err := c.dlqStream(ctx, workflow)
	if err != nil {
		return PubAck{}, err
	}
	raw, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return PubAck{}, fmt.Errorf("client: replay %s dead letter %d: %w", workflow, seq, ErrNoDeadLetter)
	}
	if err != nil {
		return PubAck{}, fmt.Errorf("client: replay %s dead letter %d: %w", workflow, seq, err)
	}
	return c.replay(ctx, s, deadLetterOf(workflow, raw))
}

func (c *Client) replay(ctx context.Context, s jetstream.Stream, e DeadLetter) (PubAck, error) {
	workflow, seq := e.Workflow, e.Sequence
	if err := contract.ValidateKey(e.Key); err != nil {
		return PubAck{}, fmt.Errorf("client: replay %s dead letter %d: %w", workflow, seq, err)
	}
	id := "replay." + strconv.FormatUint(seq, 10)
	if e.JobID != "" {
		id = e.JobID + "." + id
	}
	msg := nats.NewMsg(contract.EventSubject(workflow, e.Key))
	msg.Data = e.Data
	jsapi.CopyHeaders(msg.Header, e.Headers)
	msg.Header.Set(contract.HeaderJobID, id)
	// The replay's id is the same on every attempt: it must be claimed.
	msg.Header.Del(contract.HeaderJobMade)
	ack, err := c.js.PublishMsg(ctx, msg)
	if err != nil {
		return PubAck{}, fmt.Errorf("client: replay %s dead letter %d: %w", workflow, seq, jsapi.PublishError(msg.Subject, err))
	}
	res := PubAck{ID: id, Sequence: ack.Sequence, Duplicate: ack.Duplicate}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		// Gone already: a concurrent Replay of seq won (and its publish and
		// ours were one, by the job id).
		if _, gerr := s.GetMsg(ctx, seq); !errors.Is(gerr, jetstream.ErrMsgNotFound) {
			return res, fmt.Errorf("client: replayed %s dead letter %d as job %s but could not delete it: %w", workflow, seq, id, err)
		}
	}
	return res, nil
}

// ReplayAll replays every dead letter of workflow stored when it starts,
// oldest first. It goes on past a dead letter that fails and returns how many
// were replayed and the first error; it stops early when ctx ends or the
// queue is full or gone. Each request is bounded by Config.Timeout, the
// whole only by ctx.
func (c *Client) ReplayAll(ctx context.Context, workflow string) (int, error) {
	s, err := c.dlqStream(ctx, workflow)
	if err != nil {
		return 0, err
	}
	var (
		n        int
		firstErr error
	)
	err = eachDeadLetter(ctx, s, workflow, func(e DeadLetter) bool {
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
