package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/roles"
)

// The time commands, against the order workflow on a server where every
// client has only its role's permissions: enqueue runs as a producer.

// at waits until the clock reads t: what is applied at a given time is no
// event to wait for.
func at(t time.Time) { <-time.After(time.Until(t)) }

// timeEnv is a roles environment and enqueue as a producer in it.
type timeEnv struct {
	roleEnv
	t    *testing.T
	prod *client.Client
}

func startTimeEnv(t *testing.T) timeEnv {
	t.Helper()
	e := startRoles(t, time.Minute)
	return timeEnv{roleEnv: e, t: t, prod: e.conn(t, roles.Producer)}
}

// run runs enqueue as a producer.
func (e timeEnv) run(args ...string) (string, string, int) {
	e.t.Helper()
	return runCLI(e.t, context.Background(), append(args, e.creds(roles.Producer)...)...)
}

func (e timeEnv) mustRun(args ...string) string {
	e.t.Helper()
	out, errOut, code := e.run(args...)
	if code != 0 {
		e.t.Fatalf("enqueue %v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
	}
	return out
}

// waitState waits until key has a state, for at most until.
func (e timeEnv) waitState(key string, until time.Time) contract.StateRecord {
	e.t.Helper()
	for {
		rec, err := e.prod.State(context.Background(), "order", key)
		if err == nil {
			return rec
		}
		if !errors.Is(err, client.ErrNoState) || time.Now().After(until) {
			e.t.Fatalf("%s: no state by %s: %v", key, until.Format(time.RFC3339Nano), err)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-time.After(time.Until(until)):
		}
	}
}

// TestDelayedEventsCLI: "--in 2s" and "--at" two seconds ahead print the job
// id at once; at 1s the keys have no state (status names the delayed
// event), and by 4s the event is applied, with its job id.
func TestDelayedEventsCLI(t *testing.T) {
	t.Parallel()
	e := startTimeEnv(t)
	start := time.Now()
	inID := strings.TrimSpace(e.mustRun("o-in", "start_processing", "--in", "2s"))
	atID := strings.TrimSpace(e.mustRun("o-at", "start_processing", "--at", start.Add(2*time.Second).Format(time.RFC3339Nano)))
	for _, id := range []string{inID, atID} {
		if id == "" || strings.ContainsAny(id, " \n") {
			t.Fatalf("job id %q: want one token", id)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("enqueue took %s to print the job ids: not at once", d)
	}

	at(start.Add(time.Second))
	for key, id := range map[string]string{"o-in": inID, "o-at": atID} {
		_, errOut, code := e.run("status", key)
		if code != 1 || !strings.Contains(errOut, "no state for key "+key) || !strings.Contains(errOut, "delayed event=start_processing job="+id) {
			t.Fatalf("status %s at 1s: exit %d, stderr %q; want no state, and the delayed event named", key, code, errOut)
		}
	}

	deadline := start.Add(4 * time.Second)
	for key, id := range map[string]string{"o-in": inID, "o-at": atID} {
		e.waitState(key, deadline)
		if j, err := e.prod.Job(context.Background(), "order", id); err != nil || j.Key != key || j.Event != "start_processing" {
			t.Fatalf("job %s: %+v %v; want taken by %s", id, j, err, key)
		}
	}
	t.Logf("applied %s after publishing", time.Since(start).Round(time.Millisecond))
	if out := e.mustRun("status", "o-in"); !strings.HasPrefix(out, "o-in processing") || strings.Contains(out, "delayed") {
		t.Fatalf("status after firing: %q", out)
	}
}

// TestCancelCLI: cancel before firing prints "cancelled" and the event is
// never applied; a second cancel, an unknown id and a cancel after firing
// exit 1 with the reason.
func TestCancelCLI(t *testing.T) {
	t.Parallel()
	e := startTimeEnv(t)
	start := time.Now()
	gone := strings.TrimSpace(e.mustRun("o-gone", "start_processing", "--in", "2s"))
	fired := strings.TrimSpace(e.mustRun("o-fired", "start_processing", "--in", "1s", "--id", "fired-1"))
	if out := e.mustRun("cancel", gone); out != "cancelled\n" {
		t.Fatalf("cancel: stdout %q, want \"cancelled\"", out)
	}
	for _, c := range []struct{ id, reason string }{
		{gone, "already cancelled"},
		{"no-such-job", "no delayed event has this job id"},
	} {
		if out, errOut, code := e.run("cancel", c.id); code != 1 || out != "" || !strings.Contains(errOut, c.reason) {
			t.Fatalf("cancel %s: exit %d, stdout %q, stderr %q; want 1 and %q", c.id, code, out, errOut, c.reason)
		}
	}
	e.waitState("o-fired", time.Now().Add(20*time.Second))
	if _, errOut, code := e.run("cancel", fired); code != 1 || !strings.Contains(errOut, "already fired: a worker took it at") {
		t.Fatalf("cancel after firing: exit %d, stderr %q", code, errOut)
	}
	at(start.Add(4 * time.Second))
	if rec, err := e.prod.State(context.Background(), "order", "o-gone"); !errors.Is(err, client.ErrNoState) {
		t.Fatalf("the cancelled event was applied: %+v %v", rec, err)
	}
}

// TestRecurringSchedulesCLI: "schedule add --every 1s" fires at least three
// times in 4s, each firing once (its own job id, one status); list shows it;
// after "schedule rm" it fires no more. A cron schedule in a zone is listed
// with its next fire time in that zone.
func TestRecurringSchedulesCLI(t *testing.T) {
	t.Parallel()
	e := startTimeEnv(t)
	var (
		mu       sync.Mutex
		statuses = map[string]int{} // per job id
	)
	sub, err := e.prod.Subscribe("order", "o-tick", func(st contract.Status) {
		if st.Settled {
			mu.Lock()
			statuses[st.JobID]++
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	firings := func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for id, n := range statuses {
			if strings.HasPrefix(id, "tick@") {
				out[id] = n
			}
		}
		return out
	}

	start := time.Now()
	if out := e.mustRun("schedule", "add", "tick", "o-tick", "start_processing", "--every", "1s"); !strings.HasPrefix(out, "added tick: o-tick start_processing @every 1s, next at ") {
		t.Fatalf("schedule add: %q", out)
	}
	if _, errOut, code := e.run("schedule", "add", "tick", "o-tick", "start_processing", "--every", "1m"); code != 1 || !strings.Contains(errOut, "exists") {
		t.Fatalf("the same name again: exit %d, %q", code, errOut)
	}
	out := e.mustRun("schedule", "list")
	if !strings.Contains(out, "NAME") || !strings.Contains(out, "tick") || !strings.Contains(out, "@every 1s") {
		t.Fatalf("schedule list: %q", out)
	}

	at(start.Add(4 * time.Second))
	if got := firings(); len(got) < 3 {
		t.Fatalf("%d firings in 4s, want at least 3: %v", len(got), got)
	}
	if out := e.mustRun("schedule", "rm", "tick"); out != "removed tick\n" {
		t.Fatalf("schedule rm: %q", out)
	}
	removed := time.Now()
	if _, errOut, code := e.run("schedule", "rm", "tick"); code != 1 || !strings.Contains(errOut, "no such schedule") {
		t.Fatalf("rm again: exit %d, %q", code, errOut)
	}
	at(removed.Add(2500 * time.Millisecond))
	got := firings()
	for id, n := range got {
		fire, err := time.Parse(time.RFC3339, strings.TrimPrefix(id, "tick@"))
		if err != nil || n != 1 || fire.After(removed) {
			t.Fatalf("firing %s: %d statuses, fire time %s (%v); want one, before the rm at %s", id, n, fire, err, removed)
		}
	}
	t.Logf("%d firings, each once, none after rm", len(got))

	// A cron schedule at noon in Kolkata (UTC+05:30, no summer time) is
	// next at the first 06:30 UTC from now.
	e.mustRun("schedule", "add", "noon", "o-noon", "start_processing", "--cron", "0 0 12 * * *", "--tz", "Asia/Kolkata")
	now := time.Now().UTC()
	want := time.Date(now.Year(), now.Month(), now.Day(), 6, 30, 0, 0, time.UTC)
	if !want.After(now) {
		want = want.AddDate(0, 0, 1)
	}
	var s struct {
		Name, Key, Event, Spec string
		TimeZone               string    `json:"time_zone"`
		Next                   time.Time `json:"next"`
	}
	line := e.mustRun("schedule", "list", "--json")
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		t.Fatalf("schedule list --json: %q: %v", line, err)
	}
	if s.Name != "noon" || s.Key != "o-noon" || s.Spec != "0 0 12 * * *" || s.TimeZone != "Asia/Kolkata" || !s.Next.Equal(want) {
		t.Fatalf("listed %+v, want next at %s", s, want)
	}
	if _, off := s.Next.Zone(); off != 5*3600+1800 {
		t.Fatalf("next %s: want it written in the schedule's zone (+05:30)", s.Next)
	}
	if out := e.mustRun("schedule", "list"); !strings.Contains(out, want.In(time.FixedZone("", 5*3600+1800)).Format(time.RFC3339)) {
		t.Fatalf("schedule list: %q, want the next fire time %s in +05:30", out, want)
	}

	// The classic five fields of crontab (minute first) are taken too,
	// stored with a second of 0: 09:15 on weekdays in Kolkata.
	e.mustRun("schedule", "rm", "noon")
	e.mustRun("schedule", "add", "standup", "o-standup", "start_processing", "--cron", "15 9 * * mon-fri", "--tz", "Asia/Kolkata")
	want = time.Date(now.Year(), now.Month(), now.Day(), 3, 45, 0, 0, time.UTC) // 09:15 at +05:30
	for !want.After(now) || want.In(time.FixedZone("", 5*3600+1800)).Weekday() == time.Saturday ||
		want.In(time.FixedZone("", 5*3600+1800)).Weekday() == time.Sunday {
		want = want.AddDate(0, 0, 1)
	}
	line = e.mustRun("schedule", "list", "--json")
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		t.Fatalf("schedule list --json: %q: %v", line, err)
	}
	if s.Name != "standup" || s.Spec != "0 15 9 * * mon-fri" || !s.Next.Equal(want) {
		t.Fatalf("listed %+v, want spec \"0 15 9 * * mon-fri\" next at %s", s, want)
	}
}

// TestTimeFlagsBadInput: each time flag's bad values, and the time commands'
// bad arguments, get a clear error and exit 2 (usage) or 1 (refused), and
// nothing is stored.
func TestTimeFlagsBadInput(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	ctx := context.Background()
	future := time.Now().Add(time.Hour).Format(time.RFC3339)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"k", "start_processing", "--in", "0s"}, 1, "the delay must be positive"},
		{[]string{"k", "start_processing", "--in", "-5s"}, 1, "the delay must be positive"},
		{[]string{"k", "start_processing", "--in", "soon"}, 2, "invalid argument \"soon\" for \"--in\""},
		{[]string{"k", "start_processing", "--at", "tomorrow"}, 2, "want an RFC 3339 time"},
		{[]string{"k", "start_processing", "--at", "2020-01-01T00:00:00Z"}, 1, "is in the past"},
		{[]string{"k", "start_processing", "--in", "2s", "--at", future}, 2, "--in and --at exclude each other"},
		// Past what the server takes: a time after year 9999, and data
		// that leaves no room for the headers a firing gains.
		{[]string{"k", "start_processing", "--at", "9999-12-31T23:59:59.5Z"}, 1, "is past 9999-12-31T23:59:59Z, the latest time the server takes"},
		{[]string{"k", "start_processing", `{"x":"` + strings.Repeat("x", 64<<10-600) + `"}`, "--in", "1s"}, 1, "too large"},
		{[]string{"status", "k", "--in", "2s"}, 2, "--in applies only to publishing"},
		{[]string{"--file", "-", "--at", future}, 2, "--at applies only to publishing"},
		{[]string{"k", "start_processing", "--every", "1s"}, 2, "--every applies only to schedule add"},
		{[]string{"schedule", "list", "--cron", "@daily"}, 2, "--cron applies only to schedule add"},
		{[]string{"schedule", "add", "n", "k", "e"}, 2, "needs --every DURATION or --cron"},
		{[]string{"schedule", "add", "n", "k", "e", "--every", "1s", "--cron", "@daily"}, 2, "--every and --cron exclude each other"},
		{[]string{"schedule", "add", "n", "k", "e", "--every", "1s", "--tz", "UTC"}, 2, "--tz applies only with --cron"},
		{[]string{"schedule", "add", "n", "k", "e", "--every", "soon"}, 2, "invalid argument \"soon\" for \"--every\""},
		{[]string{"schedule", "add", "n", "k", "e", "--every", "500ms"}, 1, "the interval must be at least 1s"},
		{[]string{"schedule", "add", "n", "k", "e", "--cron", "0 */5 * * * * *"}, 1, "has 7 fields, want 6: second minute hour day-of-month month day-of-week (e.g. \"0 */5 * * * *\"), or the classic 5"},
		{[]string{"schedule", "add", "n", "k", "e", "--cron", "*/5 * *"}, 1, "has 3 fields, want 6"},
		{[]string{"schedule", "add", "n", "k", "e", "--cron", "0 0 0 30 2 *"}, 1, "matches no time within 5 years"},
		{[]string{"schedule", "add", "n", "k", "e", "--cron", "0 0 25 * * *"}, 1, "hour field"},
		{[]string{"schedule", "add", "n", "k", "e", "--cron", "@daily", "--tz", "Mars/Olympus"}, 1, "unknown time zone \"Mars/Olympus\""},
		{[]string{"schedule", "add", "n", "k", "e", "--cron", "@daily", "--tz", "Local"}, 1, "time zone \"Local\""},
		{[]string{"schedule", "add", "bad.name", "k", "e", "--every", "1s"}, 1, "invalid schedule name"},
		{[]string{"schedule", "add", "n", "bad key", "e", "--every", "1s"}, 1, "invalid key"},
		{[]string{"schedule", "add", "n", "k", "e", "{nope", "--every", "1s"}, 1, "DATA_JSON is not JSON"},
		{[]string{"schedule", "add", "n", "k", "--every", "1s"}, 2, "schedule add takes NAME KEY EVENT"},
		{[]string{"schedule", "rm"}, 2, "schedule rm takes one NAME"},
		{[]string{"schedule", "list", "x"}, 2, "schedule list takes no arguments"},
		{[]string{"schedule", "frob"}, 2, "want add, list or rm"},
		{[]string{"schedule"}, 2, "schedule takes add, list or rm"},
		{[]string{"cancel"}, 2, "cancel takes one JOB_ID"},
		{[]string{"cancel", "a", "b"}, 2, "cancel takes one JOB_ID"},
		{[]string{"cancel", "a", "--in", "1s"}, 2, "--in applies only to publishing"},
		{[]string{"cancel", " padded"}, 1, "invalid job id"},
		{[]string{"cancel", "no-such-job"}, 1, "no delayed event has this job id"},
		{[]string{"schedule", "rm", "none"}, 1, "no such schedule"},
	} {
		out, errOut, code := runCLI(t, ctx, append(c.args, "--nats-url", url)...)
		if code != c.code || !strings.Contains(errOut, c.want) || out != "" {
			t.Errorf("enqueue %q: exit %d, stdout %q, stderr %q; want exit %d and %q", c.args, code, out, errOut, c.code, c.want)
		}
	}
	if n := pending(t, conn); n != 0 {
		t.Errorf("%d events stored", n)
	}
	if n := schedulesStored(t, url); n != 0 {
		t.Errorf("%d messages in the schedules stream, want none", n)
	}
}

// schedulesStored is how many messages the schedules stream of "order"
// holds.
func schedulesStored(t *testing.T, url string) uint64 {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), contract.SchedulesStream("order"))
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// TestDelayedEventsCLIStatusShowsScheduled: "--in 2s" is announced on the
// key's status subject as scheduled (its job id and due time) before it is
// applied; "--wait" prints that as progress and waits on for the event to
// be applied; "cancel" is announced too, and ends a "--wait" with exit 1.
// The worker announces them with the worker role's permissions alone.
func TestDelayedEventsCLIStatusShowsScheduled(t *testing.T) {
	t.Parallel()
	e := startTimeEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wout, werr := newSyncBuffer(), newSyncBuffer()
	watched := make(chan int, 1)
	go func() {
		cmd := command{stdout: wout, stderr: werr, getenv: noEnv}
		watched <- exitCode(cmd.run(ctx, append([]string{"watch"}, e.creds(roles.Producer)...)))
	}()
	werr.waitFor(t, "watching orderly.status.order.*")

	start := time.Now()
	id := strings.TrimSpace(e.mustRun("o-s", "start_processing", "--in", "2s", "--id", "s-1"))
	due := start.Add(2 * time.Second)
	wout.waitFor(t, "o-s idle -> processing (version 1) event=start_processing job=s-1")
	var scheduledAt, appliedAt int
	for i, line := range strings.Split(wout.String(), "\n") {
		switch {
		case strings.Contains(line, "o-s idle -> idle (version 0) event=start_processing job="+id+" scheduled_for="):
			scheduledAt = i + 1
			v := strings.Fields(line[strings.Index(line, "scheduled_for="):])[0]
			when, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(v, "scheduled_for="))
			if err != nil || when.Before(due.Add(-time.Second)) || when.After(due.Add(time.Second)) {
				t.Fatalf("scheduled for %q (%v), want about %s", v, err, due)
			}
			if strings.Contains(line, " settled") || strings.Contains(line, "error=") {
				t.Fatalf("scheduled status %q: want it unsettled, no error", line)
			}
		case strings.Contains(line, "o-s idle -> processing (version 1)"):
			appliedAt = i + 1
		}
	}
	if scheduledAt == 0 || appliedAt < scheduledAt {
		t.Fatalf("watch printed:\n%s\nwant the scheduled status (line %d) before the applied one (line %d)", wout.String(), scheduledAt, appliedAt)
	}

	// --wait prints the scheduled status as progress and waits for the end.
	out, errOut, code := e.run("o-w", "start_processing", "--in", "2s", "--wait", "--id", "w-1")
	if code != 0 || out != "o-w processing (version 2)\n" || !strings.Contains(errOut, "o-w idle -> idle (version 0) event=start_processing job=w-1 scheduled_for=") ||
		!strings.Contains(errOut, "o-w idle -> processing (version 1) event=start_processing job=w-1") {
		t.Fatalf("--in 2s --wait: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// A cancel is announced, and ends a --wait on the job.
	waited := make(chan string, 1)
	go func() {
		out, errOut, code := e.run("o-c", "start_processing", "--in", "1h", "--wait", "--id", "c-1", "--timeout", "30s")
		waited <- fmt.Sprintf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}()
	wout.waitFor(t, "job=c-1 scheduled_for=")
	e.mustRun("cancel", "c-1")
	wout.waitFor(t, "o-c idle -> idle (version 0) event=start_processing job=c-1 scheduled_for=")
	wout.waitFor(t, "settled error=cancelled: delayed event cancelled at ")
	if got := natstest.Recv(t, waited, natstest.Timeout, "--wait to end on the cancel"); !strings.HasPrefix(got, "exit 1, ") ||
		!strings.Contains(got, "job c-1 ended in idle: cancelled: delayed event cancelled at") {
		t.Fatalf("--wait on a job cancelled: %s; want exit 1 saying it was cancelled", got)
	}
	cancel()
	if code := natstest.Recv(t, watched, natstest.Timeout, "watch to end after its cancellation"); code != 0 {
		t.Fatalf("watch: exit %d, stderr %q", code, werr.String())
	}
}
