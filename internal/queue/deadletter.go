package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsapi"
	"github.com/orderly-dev/orderly/internal/tracing"
)

// DeadLetter stores a copy of m (its body and headers, plus the
// Orderly-Dlq-* headers) on orderly.dlq.<workflow>.<key> and returns once
// JetStream has acknowledged it; the caller then Terms m. JetStream's
// Nats-* control headers (Nats-Expected-*, Nats-TTL, Nats-Rollup, ...) are
// left out, since on the copy they would act on the dead-letter stream; the
// job id is kept as HeaderDLQJobID. A span in ctx becomes the copy's trace
// context. m.Key is used as it is, even if it breaks
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
	// The trace of ctx (the worker's span of the dead-lettering) takes the
	// place of the event's own; without one the copy keeps the event's.
	tracing.Inject(ctx, msg.Header)
	return c.publishDeadLetter(ctx, msg)
}

// deadLetterMsg is the dead-letter copy of the event stored as seq under
// subject, for key: see DeadLetter.
func deadLetterMsg(workflow, key, subject string, orig nats.Header, data []byte, id string, seq, delivered uint64, reason string) *nats.Msg {
	msg := nats.NewMsg(contract.DeadLetterSubject(workflow, key))
	msg.Data = data
	jsapi.CopyHeaders(msg.Header, orig)
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

// headerValue makes s safe as a header value: one line, at most 1 KiB.
func headerValue(s string) string {
	s = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(s)
	if len(s) > 1024 {
		s = strings.ToValidUTF8(s[:1024], "")
	}
	return s
}
