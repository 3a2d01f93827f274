package orderlytest_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/orderlytest"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// Ticks counts the ticks a key was sent.
type Ticks struct {
	N int `json:"n"`
}

// tickWorkflow: a key in "on" takes "tick" and counts it, until "stop".
func tickWorkflow(t *testing.T) worker.Workflow {
	t.Helper()
	m := statemachine.MustNew(statemachine.Definition[Ticks]{
		Name:    "ticks",
		Initial: "on",
		States:  []statemachine.StateDef{{Name: "on"}, {Name: "off", Terminal: true}},
		Events:  []statemachine.EventDef{{Name: "tick", Client: true}, {Name: "stop", Client: true}},
		Transitions: []statemachine.Transition[Ticks]{
			{From: "on", On: "tick", To: "on", Update: func(d Ticks, _ statemachine.Input) (Ticks, error) { d.N++; return d, nil }},
			{From: "on", On: "stop", To: "off"},
		},
	})
	wf, err := worker.NewWorkflow(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	return wf
}

// firings returns the job ids of key's ticks applied so far, in order.
func firings(h *orderlytest.Harness, key string) []string {
	var ids []string
	for _, st := range h.Statuses(key) {
		if st.Event == "tick" && st.Error == nil && st.Settled {
			ids = append(ids, st.JobID)
		}
	}
	return ids
}

// waitFirings waits until key has n ticks applied, and returns their job
// ids.
func waitFirings(t *testing.T, h *orderlytest.Harness, key string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(orderlytest.DefaultTimeout)
	for {
		ids := firings(h, key)
		if len(ids) >= n {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d firings applied within %s, want %d: %v", key, len(ids), orderlytest.DefaultTimeout, n, ids)
		}
		time.Sleep(10 * time.Millisecond) // a poll: the harness records statuses as they come
	}
}

// TestControllableClockFiresRecurringSchedules: a schedule every five
// minutes and a nightly cron schedule in a zone, tested in about a second:
// each Advance fires the firings that fall within the time it skips, once
// each, with the job ids the server would give them; none after the
// schedule is removed.
func TestControllableClockFiresRecurringSchedules(t *testing.T) {
	t.Parallel()
	h := orderlytest.Start(t, []worker.Workflow{tickWorkflow(t)})
	ctx, cancel := context.WithTimeout(context.Background(), orderlytest.DefaultTimeout)
	defer cancel()
	c := h.Client()
	begin := h.Clock().Now()
	if _, err := c.AddSchedule(ctx, "ticks", client.Schedule{Name: "remind", Key: "r", Event: "tick", Every: 5 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddSchedule(ctx, "ticks", client.Schedule{Name: "nightly", Key: "n", Event: "tick", Cron: "0 0 2 * * *", TimeZone: "Europe/Berlin"}); err != nil {
		t.Fatal(err)
	}
	list, err := c.Schedules(ctx, "ticks")
	if err != nil || len(list) != 2 || list[0].Name != "remind" {
		t.Fatalf("schedules %+v %v", list, err)
	}
	stored := list[0].Added // the server's time of storing it

	start := time.Now()
	for i := 1; i <= 3; i++ {
		h.Advance(4 * time.Minute) // not due yet
		h.Advance(time.Minute)
		ids := waitFirings(t, h, "r", i)
		// Counted from the stored time rounded to a second, as the
		// server counts.
		if want := contract.ScheduleJobID("remind", stored.Round(time.Second).Add(time.Duration(i)*5*time.Minute)); ids[i-1] != want {
			t.Fatalf("firing %d: job id %s, want %s", i, ids[i-1], want)
		}
	}
	t.Logf("3 firings, 5 minutes apart, in %s of real time", time.Since(start).Round(time.Millisecond))

	if err := c.RemoveSchedule(ctx, "ticks", "remind"); err != nil {
		t.Fatal(err)
	}
	h.Advance(24 * time.Hour)
	end := h.Clock().Now()
	// The nightly firings: 02:00 in Berlin on each day between begin and
	// end, worked out here without the cron package.
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for d := begin.In(berlin).AddDate(0, 0, -1); !d.After(end); d = d.AddDate(0, 0, 1) {
		at := time.Date(d.Year(), d.Month(), d.Day(), 2, 0, 0, 0, berlin)
		if at.After(begin) && !at.After(end) {
			want = append(want, contract.ScheduleJobID("nightly", at))
		}
	}
	got := waitFirings(t, h, "n", len(want))
	if !slices.Equal(got, want) {
		t.Fatalf("nightly firings %v, want %v", got, want)
	}
	time.Sleep(1500 * time.Millisecond) // a negative check: Advance's firings come at once
	if ids := firings(h, "r"); len(ids) != 3 {
		t.Fatalf("firings of the removed schedule: %v, want the 3 before its removal", ids)
	}
	for _, key := range []string{"r", "n"} {
		sts := h.Statuses(key)
		seen := map[string]bool{}
		for _, st := range sts {
			if seen[st.JobID] || !strings.Contains(st.JobID, "@") {
				t.Fatalf("%s: statuses %+v: want one per firing", key, sts)
			}
			seen[st.JobID] = true
		}
	}
	if n := h.State("r").Version; n != 3 {
		t.Fatalf("r: version %d, want 3", n)
	}
}
