package queue

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsapi"
)

// TestRecurringJobID: each firing of a recurring schedule has the job id
// of its name and fire time, found from the next fire time the server
// announces with it; a firing that comes twice (same schedule, same next)
// has the same id, so it is applied once.
func TestRecurringJobID(t *testing.T) {
	t.Parallel()
	firing := func(name, spec, zone, next string) nats.Header {
		h := nats.Header{}
		h.Set(jsapi.NatsScheduler, contract.RecurringSubject("order", name))
		h.Set(jsapi.NatsScheduleNext, next)
		h.Set(contract.HeaderSchedule, spec)
		if zone != "" {
			h.Set(contract.HeaderScheduleZone, zone)
		}
		return h
	}
	for _, c := range []struct {
		h    nats.Header
		want string
	}{
		{firing("tick", "@every 1s", "", "2026-03-27T10:00:01Z"), "tick@2026-03-27T10:00:00Z"},
		{firing("tick", "@every 1m30s", "", "2026-03-27T10:01:30.000000001Z"), "tick@2026-03-27T10:00:00Z"},
		// 09:30 in Berlin on weekdays: fired Friday 27 March (CET, UTC+1),
		// next Monday (CEST, UTC+2).
		{firing("standup", "0 30 9 * * mon-fri", "Europe/Berlin", "2026-03-30T07:30:00Z"), "standup@2026-03-27T08:30:00Z"},
		{firing("nightly", "@daily", "", "2026-03-28T00:00:00Z"), "nightly@2026-03-27T00:00:00Z"},
		{firing("bad", "not a schedule", "", "2026-03-28T00:00:00Z"), ""},
		{firing("bad", "@daily", "", "purge"), ""},
	} {
		if got := recurringJobID(c.h); got != c.want {
			t.Errorf("%v: %q, want %q", c.h, got, c.want)
		}
	}
}

func TestStoredToken(t *testing.T) {
	t.Parallel()
	for subject, want := range map[string]string{
		"orderly.events.order.3.at.k":      delayedToken,
		"orderly.events.order.3.every.k":   recurringToken,
		"orderly.events.order.3.timer.k":   timerToken,
		"orderly.events.order.3.k":         "",
		"orderly.events.order.k":           "",
		"orderly.events.other.3.at.k":      "",
		"orderly.events.order.3.at.k.more": "",
	} {
		if got := storedToken("order", subject); got != want {
			t.Errorf("%s: %q, want %q", subject, got, want)
		}
	}
}
