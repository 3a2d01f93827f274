package cron_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/internal/cron"
	"github.com/orderly-dev/orderly/internal/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

// patterns are schedules with the server's verdict on each, the quirks
// included; TestServerAgrees checks the verdicts against a real server.
var patterns = []struct {
	pattern, zone string
	ok            bool
}{
	{"* * * * * *", "", true},
	{"0 */5 * * * *", "", true},
	{"0 30 9 * * mon-fri", "Europe/Berlin", true},
	{"0 0 12 1,15 * ?", "America/New_York", true},
	{"0 0 0 1 jan-mar,oct *", "", true},
	{"0 0 0 * * SUN", "", true},
	{"*-5 * * * * *", "", true}, // the server reads "*-5" as "*"
	{"1,,2 * * * * *", "", true},
	{"5/15 * * * * *", "", true},
	{"@daily", "", true},
	{"@hourly", "Asia/Kolkata", true},
	{"@weekly", "", true},
	{"@every 1s", "", true},
	{"@every 90m", "", true},
	{"@at 2030-01-02T03:04:05Z", "", true},
	{"@at 2030-01-02T03:04:05.5+02:00", "", true},

	{"*/5 * * * *", "", false},         // five fields: the server wants six
	{"0 0 0 * * * *", "", false},       // seven
	{"60 * * * * *", "", false},        // second out of range
	{"0 0 24 * * *", "", false},        // hour out of range
	{"0 0 0 0 * *", "", false},         // day-of-month 0
	{"0 0 0 * 13 *", "", false},        // month 13
	{"0 0 0 * * 7", "", false},         // day-of-week 7
	{"0 0 0 30 2 *", "", false},        // 30 February: never within five years
	{"0 0 0 * * mon-", "", false},      // a range without an end
	{"0 0 0 * * 5-1", "", false},       // backwards range
	{"*/0 * * * * *", "", false},       // step 0
	{"1/2/3 * * * * *", "", false},     // two slashes
	{"1-2-3 * * * * *", "", false},     // two hyphens
	{"-1 * * * * *", "", false},        // negative
	{"x * * * * *", "", false},         // not a number
	{"@yearly", "Mars/Olympus", false}, // unknown zone
	{"* * * * * *", "Mars/Olympus", false},
	{"@every 500ms", "", false}, // under a second
	{"@every 1s", "UTC", false}, // a zone with @every
	{"@every soon", "", false},
	{"@at 2030-01-02T03:04:05Z", "UTC", false}, // a zone with @at
	{"@at tomorrow", "", false},
	{"@at", "", false},
	{"@fortnightly", "", false},
}

func TestPatterns(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 27, 10, 0, 0, 0, time.UTC)
	for _, p := range patterns {
		_, _, err := cron.Pattern(p.pattern, p.zone, now)
		if (err == nil) != p.ok {
			t.Errorf("Pattern(%q, %q) = %v, want ok=%v", p.pattern, p.zone, err, p.ok)
		}
		if err != nil && !errors.Is(err, cron.ErrInvalid) {
			t.Errorf("Pattern(%q, %q): %v is not ErrInvalid", p.pattern, p.zone, err)
		}
	}
	// Orderly refuses what the server would read in its own zone.
	for _, zone := range []string{"Local"} {
		if _, _, err := cron.Pattern("@daily", zone, now); !errors.Is(err, cron.ErrInvalid) {
			t.Errorf("zone %q: %v, want ErrInvalid", zone, err)
		}
	}
}

// TestServerAgrees stores each pattern of the table as a message schedule
// on a real server: the server takes exactly those Pattern takes.
func TestServerAgrees(t *testing.T) {
	t.Parallel()
	js := stream(t)
	ctx := context.Background()
	for i, p := range patterns {
		m := nats.NewMsg(fmt.Sprintf("sched.s%d", i))
		m.Header.Set("Nats-Schedule", p.pattern)
		if p.zone != "" {
			m.Header.Set("Nats-Schedule-Time-Zone", p.zone)
		}
		m.Header.Set("Nats-Schedule-Target", fmt.Sprintf("fired.s%d", i))
		_, err := js.PublishMsg(ctx, m)
		if (err == nil) != p.ok {
			t.Errorf("server on %q (zone %q): %v, want ok=%v", p.pattern, p.zone, err, p.ok)
		}
	}
}

// TestNextInZone: the next fire times of a cron schedule in a fixed zone,
// across a change to summer time.
func TestNextInZone(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	s, err := cron.Parse("0 30 9 * * mon-fri", berlin)
	if err != nil {
		t.Fatal(err)
	}
	// Friday 27 March 2026, 10:00 UTC (11:00 in Berlin): the next is
	// Monday 30 March, 09:30 summer time (CEST, UTC+2) = 07:30 UTC.
	from := time.Date(2026, 3, 27, 10, 0, 0, 0, time.UTC)
	want := []time.Time{
		time.Date(2026, 3, 30, 7, 30, 0, 0, time.UTC),
		time.Date(2026, 3, 31, 7, 30, 0, 0, time.UTC),
	}
	for _, w := range want {
		got, err := s.Next(from)
		if err != nil || !got.Equal(w) {
			t.Fatalf("Next(%s) = %s, %v; want %s", from, got, err, w)
		}
		if p, ok := s.Prev(got); !ok || !p.Equal(got) {
			t.Errorf("Prev(%s) = %s, %v; want itself", got, p, ok)
		}
		if p, ok := s.Prev(got.Add(-time.Second)); !ok || !p.Before(got) {
			t.Errorf("Prev(%s - 1s) = %s, %v; want an earlier time", got, p, ok)
		} else if n, _ := s.Next(p); !n.Equal(got) {
			t.Errorf("Next(Prev(%s - 1s)) = %s", got, n)
		}
		from = got
	}
	// Before the first fire time of the table's Monday: the Friday's.
	if p, ok := s.Prev(time.Date(2026, 3, 30, 7, 29, 59, 0, time.UTC)); !ok || !p.Equal(time.Date(2026, 3, 27, 8, 30, 0, 0, time.UTC)) {
		t.Errorf("Prev before Monday = %s, %v; want Friday 08:30 UTC (09:30 CET)", p, ok)
	}
	if _, ok := mustParse(t, "0 0 0 29 2 *").Prev(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)); !ok {
		t.Error("29 February: a leap day within five years was not found")
	}
}

// TestServerFiresWhenNextSays: a repeating cron schedule in a zone fires;
// the next fire time the server announces with each firing is Next of the
// firing's time, which Prev finds again from it.
func TestServerFiresWhenNextSays(t *testing.T) {
	t.Parallel()
	js := stream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const pattern, zone = "*/2 * * * * *", "Asia/Kolkata"
	cons, err := js.OrderedConsumer(ctx, "S", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"fired.k"}})
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("sched.k")
	m.Header.Set("Nats-Schedule", pattern)
	m.Header.Set("Nats-Schedule-Time-Zone", zone)
	m.Header.Set("Nats-Schedule-Target", "fired.k")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	spec, _, err := cron.Pattern(pattern, zone, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		fired, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		next, err := time.Parse(time.RFC3339Nano, fired.Headers().Get("Nats-Schedule-Next"))
		if err != nil {
			t.Fatalf("Nats-Schedule-Next: %v", err)
		}
		slot, ok := spec.Cron.Prev(next.Add(-time.Second))
		if !ok {
			t.Fatalf("no fire time before %s", next)
		}
		if n, err := spec.Cron.Next(slot); err != nil || !n.Equal(next) {
			t.Errorf("Next(%s) = %s, %v; the server said %s", slot, n, err, next)
		}
		if next.Sub(slot) != 2*time.Second {
			t.Errorf("slot %s, next %s: want 2s apart", slot, next)
		}
	}
}

func mustParse(t *testing.T, expr string) *cron.Schedule {
	t.Helper()
	s, err := cron.Parse(expr, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// stream is a stream "S" on a fresh server that takes message schedules
// under sched.> and their firings under fired.>.
func stream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv := natstest.Server(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "S", Subjects: []string{"sched.>", "fired.>"},
		AllowMsgSchedules: true, AllowRollup: true,
	}); err != nil {
		t.Fatal(err)
	}
	return js
}

// TestExpandClassicFiveFields: crontab's five fields gain a second of 0;
// everything else is left for Parse to judge.
func TestExpandClassicFiveFields(t *testing.T) {
	for in, want := range map[string]string{
		"*/5 * * * *":         "0 */5 * * * *",
		" 15  9 * * mon-fri ": "0 15 9 * * mon-fri",
		"0 */5 * * * *":       "0 */5 * * * *",
		"@daily":              "@daily",
		"* * * *":             "* * * *",
		"0 0 0 * * * *":       "0 0 0 * * * *",
	} {
		if got := cron.Expand(in); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
	s, err := cron.Parse(cron.Expand("30 2 * * *"), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	if next, err := s.Next(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil || !next.Equal(time.Date(2026, 1, 1, 2, 30, 0, 0, time.UTC)) {
		t.Fatalf("30 2 * * * next after midnight: %s %v, want 02:30:00", next, err)
	}
}
