package queue

import (
	"slices"
	"testing"
	"time"

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
	testFiring := func(name, at string) nats.Header {
		h := nats.Header{}
		h.Set(contract.HeaderSchedule, "@every 5m0s")
		h.Set(contract.HeaderScheduleName, name)
		h.Set(contract.HeaderScheduleTime, at)
		return h
	}
	forged := func(h nats.Header, name, at string) nats.Header {
		h.Set(contract.HeaderScheduleName, name)
		h.Set(contract.HeaderScheduleTime, at)
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
		// A test clock's firing names its schedule and time itself.
		{testFiring("tick", "2026-03-27T10:00:00Z"), "tick@2026-03-27T10:00:00Z"},
		{testFiring("tick", "2026-03-27T12:00:00+02:00"), "tick@2026-03-27T10:00:00Z"},
		{testFiring("bad.name", "2026-03-27T10:00:00Z"), ""},
		{testFiring("tick", "yesterday"), ""},
		{testFiring("", ""), ""},
		// A server's firing: what the schedule's own headers claim is
		// ignored, the server's headers say.
		{forged(firing("evil", "@every 1s", "", "2026-03-27T10:00:01Z"), "nightly", "2030-01-01T00:00:00Z"), "evil@2026-03-27T10:00:00Z"},
		{forged(firing("evil", "@daily", "", "purge"), "nightly", "2030-01-01T00:00:00Z"), ""},
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

// TestRecurringDue: the firings a test clock's jump from from to to makes
// due: for "@every", the stored time plus whole intervals (the job id's
// time counted from it rounded to a second, as the server counts); for
// cron, its times in its zone; at most the latest maxAdvanceFirings.
func TestRecurringDue(t *testing.T) {
	t.Parallel()
	schedule := func(spec, zone string) nats.Header {
		h := nats.Header{}
		h.Set(headerSchedule, spec)
		if zone != "" {
			h.Set(jsapi.NatsScheduleTimeZone, zone)
		}
		return h
	}
	stored := time.Date(2026, 3, 27, 10, 0, 0, 600_000_000, time.UTC) // rounds up to :01
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	every5 := schedule("@every 5m0s", "")
	for _, c := range []struct {
		name     string
		h        nats.Header
		from, to time.Time
		want     []string // fire times
	}{
		{"not yet", every5, stored.Add(time.Millisecond), stored.Add(4 * time.Minute), nil},
		{"one interval", every5, stored.Add(time.Millisecond), stored.Add(5*time.Minute + time.Millisecond), []string{"2026-03-27T10:05:01Z"}},
		{"three", every5, stored.Add(time.Minute), stored.Add(16 * time.Minute), []string{"2026-03-27T10:05:01Z", "2026-03-27T10:10:01Z", "2026-03-27T10:15:01Z"}},
		{"from excluded", every5, stored.Add(5 * time.Minute), stored.Add(9 * time.Minute), nil},
		{"to included", every5, stored.Add(9 * time.Minute), stored.Add(10 * time.Minute), []string{"2026-03-27T10:10:01Z"}},
		// 09:30 in Berlin on weekdays, over a weekend and the change to
		// summer time (Sunday 29 March).
		{"cron in a zone", schedule("0 30 9 * * mon-fri", "Europe/Berlin"), at("2026-03-27T08:00:00Z"), at("2026-03-31T09:00:00Z"),
			[]string{"2026-03-27T08:30:00Z", "2026-03-30T07:30:00Z", "2026-03-31T07:30:00Z"}},
		{"cron, to included", schedule("@daily", ""), at("2026-03-27T00:00:00Z"), at("2026-03-28T00:00:00Z"), []string{"2026-03-28T00:00:00Z"}},
		{"not a schedule", schedule("soon", ""), stored, stored.Add(time.Hour), nil},
		{"backwards", every5, stored.Add(time.Hour), stored, nil},
	} {
		var got []string
		for _, f := range recurringDue(c.h, stored, c.from, c.to) {
			got = append(got, f[0].UTC().Format(time.RFC3339))
			if f[1].After(c.to) || !f[1].After(c.from) {
				t.Errorf("%s: firing %s due at %s, outside (%s, %s]", c.name, f[0], f[1], c.from, c.to)
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	// A long jump over a short interval fires the latest only.
	every1 := schedule("@every 1s", "")
	got := recurringDue(every1, stored, stored, stored.Add(24*time.Hour))
	if len(got) != maxAdvanceFirings || !got[len(got)-1][1].Equal(stored.Add(24*time.Hour)) {
		t.Fatalf("a day of every second: %d firings, the last due %s", len(got), got[len(got)-1][1])
	}
	cron1 := schedule("* * * * * *", "")
	if got := recurringDue(cron1, stored, stored, stored.Add(24*time.Hour)); len(got) != maxAdvanceFirings {
		t.Fatalf("a day of a cron every second: %d firings", len(got))
	}
}
