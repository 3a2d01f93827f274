package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/orderly-dev/orderly/contract"
)

// Undeliverable events ("strays").
//
// A producer using plain NATS can publish to orderly.events.<workflow>.*
// or orderly.events.<workflow>.> with the wildcard as a literal last token.
// The stream takes the message (its subject matches the stream's), the
// subject transform refuses a subject that is not literal, so the message is
// stored untransformed, and no partition's consumer (filtered on
// orderly.events.<workflow>.<partition>.>) ever delivers it: left alone it
// holds a place under the queue limit for good. The server offers no way to
// refuse such a publish (only a client's own "pedantic" option would), so
// the worker sweeps them out to the dead letters instead.
//
// Finding them takes care: JetStream's subject filters treat a stored
// literal ">" token differently in different places. A consumer filtered on
// orderly.events.<workflow>.* delivers a stored "*" but never a stored ">",
// and a filter that would match ">" (orderly.events.<workflow>.>) overlaps
// the partitions' filters, which a work-queue stream refuses. The "last
// message for subject" look-up goes by the store's subject index, which
// matches both: each sweep takes the newest stray, dead-letters it and
// deletes it from the stream, until none is left.

// strayFilters are the subjects under which undeliverable events of
// workflow are stored in its events stream: events published with a
// wildcard where the key goes, and fired timers whose subject the sourcing
// transform could not map (a wildcard kind or key).
func strayFilters(workflow string) []string {
	return []string{contract.EventSubject(workflow, "*"), firedSubject(workflow, "*", "*")}
}

// isStray reports whether subject, stored in workflow's events stream, is
// one no partition delivers. Everything the stream can deliver was rewritten
// by a transform to orderly.events.<workflow>.<partition>.<key>.
func isStray(workflow, subject string) bool {
	if rest, ok := strings.CutPrefix(subject, contract.EventSubject(workflow, "")); ok {
		return !strings.Contains(rest, ".")
	}
	return strings.HasPrefix(subject, strings.TrimSuffix(firedSubject(workflow, "*", "*"), "*.*"))
}

// Stray is an undeliverable event that DeadLetterStrays moved to the dead
// letters.
type Stray struct {
	// Subject is the subject the event was published and stored under.
	Subject string
	// Sequence is its sequence in the events stream.
	Sequence uint64
	// JobID is its Nats-Msg-Id, empty if it had none.
	JobID string
	// Reason is the reason stored with its dead letter.
	Reason string
}

// strayKey is the key token of a stray's dead letter: the subject's last
// token, with a wildcard spelled out, since a dead letter's subject must be
// literal for the dead letters to be listed. Neither spelling is a valid
// key, so Replay refuses them.
func strayKey(subject string) string {
	switch key := contract.KeyOfSubject(subject); key {
	case "*":
		return "%2A"
	case ">":
		return "%3E"
	default:
		return key
	}
}

// DeadLetterStrays moves up to max undeliverable events of workflow (see
// above) to its dead letters, newest first, and returns them. Each is copied
// to the dead letters (reason "undeliverable_subject: ...", its key token
// the subject's last, a wildcard spelled %2A or %3E) and only then deleted
// from the events stream, so a crash in between dead-letters it again under
// the same Nats-Msg-Id, stored once within the dead-letter stream's
// duplicate window. Two workers sweeping at once do no harm for the same
// reason. It stops at the first error, with the strays moved until then.
func (c *Conn) DeadLetterStrays(ctx context.Context, workflow string, max int) ([]Stray, error) {
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, err
	}
	s, err := c.js.Stream(ctx, contract.EventsStream(workflow))
	if err != nil {
		return nil, fmt.Errorf("queue: strays of %s: %w", workflow, err)
	}
	var out []Stray
	for _, filter := range strayFilters(workflow) {
		for len(out) < max {
			raw, err := s.GetLastMsgForSubject(ctx, filter)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return out, fmt.Errorf("queue: strays of %s: %w", workflow, err)
			}
			if !isStray(workflow, raw.Subject) {
				// The look-up matched a deliverable event: never touch it.
				return out, fmt.Errorf("queue: strays of %s: %s matched %s, which a partition delivers", workflow, filter, raw.Subject)
			}
			st := Stray{
				Subject:  raw.Subject,
				Sequence: raw.Sequence,
				JobID:    raw.Header.Get(contract.HeaderJobID),
				Reason: contract.CodeUndeliverableSubject + ": " + raw.Subject + " names no key (a wildcard stands where the key goes), " +
					"so no partition delivers it; publish to " + contract.EventSubject(workflow, "<key>"),
			}
			if strings.HasPrefix(raw.Subject, contract.Namespace+".timers.") {
				st.Reason = contract.CodeUndeliverableSubject + ": the fired timer " + raw.Subject + " names no key, so no partition delivers it"
			}
			msg := deadLetterMsg(workflow, strayKey(raw.Subject), raw.Subject, raw.Header, raw.Data, st.JobID, raw.Sequence, 0, st.Reason)
			if err := c.publishDeadLetter(ctx, msg); err != nil {
				return out, err
			}
			if err := s.DeleteMsg(ctx, raw.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				// Deleted already by a sweep racing this one, or not: the
				// next sweep finds it if it is still there.
				if _, gerr := s.GetMsg(ctx, raw.Sequence); !errors.Is(gerr, jetstream.ErrMsgNotFound) {
					return out, fmt.Errorf("queue: strays of %s: delete %d: %w", workflow, raw.Sequence, err)
				}
			}
			out = append(out, st)
		}
	}
	return out, nil
}
