package queue

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Timer headers, on a scheduled event when it arrives.
const (
	// HeaderTimerKind names the timer ("timeout", "resume", ...).
	HeaderTimerKind = "Orderly-Timer-Kind"
	// HeaderTimerVisit is the caller's tag, e.g. the version at which the
	// key entered the state whose timeout this is.
	HeaderTimerVisit = "Orderly-Timer-Visit"
)

// Schedule has JetStream deliver ev to key at time at, as an event like any
// other, in the key's partition, even if no worker runs in between. There is
// one pending schedule per kind and key: scheduling again replaces it. kind
// must be a subject token other than "fired"; visit is handed back in
// HeaderTimerVisit. Delivery is at whole seconds, never early.
func (c *Conn) Schedule(ctx context.Context, workflow, key, kind string, visit uint64, at time.Time, ev Envelope) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if kind == "" || kind == "fired" {
		return fmt.Errorf("queue: schedule: bad kind %q", kind)
	}
	body, err := marshalEnvelope(&ev)
	if err != nil {
		return fmt.Errorf("queue: schedule: %w", err)
	}
	// Round up: a timeout must not fire before its time.
	at = at.UTC().Truncate(time.Second)
	m := nats.NewMsg(scheduleSubject(workflow, kind, key))
	m.Data = body
	m.Header.Set("Nats-Schedule", "@at "+at.Add(time.Second).Format(time.RFC3339))
	m.Header.Set("Nats-Schedule-Target", firedSubject(workflow, kind, key))
	m.Header.Set(HeaderTimerKind, kind)
	m.Header.Set(HeaderTimerVisit, strconv.FormatUint(visit, 10))
	// The same schedule sent twice (a retried commit) is stored once.
	m.Header.Set(jetstream.MsgIDHeader, kind+"."+key+"."+strconv.FormatUint(visit, 10)+"."+strconv.FormatInt(at.Unix(), 10))
	if _, err := c.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("queue: schedule %s for %s: %w", kind, key, err)
	}
	return nil
}

// Timer reports whether m is a scheduled event, with its kind and visit.
func (m *Msg) Timer() (kind string, visit uint64, ok bool) {
	h := m.raw.Headers()
	kind = h.Get(HeaderTimerKind)
	if kind == "" || h.Get("Nats-Scheduler") == "" {
		return "", 0, false
	}
	visit, err := strconv.ParseUint(h.Get(HeaderTimerVisit), 10, 64)
	return kind, visit, err == nil
}
