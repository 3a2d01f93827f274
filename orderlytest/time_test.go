package orderlytest_test

import (
	"context"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/orderlytest"
	"github.com/orderly-dev/orderly/worker"
)

// A delayed event an hour out fires in about a second of real time once
// the test clock is advanced past it; not before.
func TestControllableClockFiresDelayedEvents(t *testing.T) {
	t.Parallel()
	wf, err := order.NewWorkflow(order.Config{}, order.NewSimGateway(order.SimConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	h := orderlytest.Start(t, []worker.Workflow{wf})
	ctx, cancel := context.WithTimeout(context.Background(), orderlytest.DefaultTimeout)
	defer cancel()
	c := h.Client()

	if _, err := c.Publish(ctx, order.Workflow, "late", contract.Envelope{Event: "start_processing"},
		client.WithJobID("late-1"), client.WithDelay(time.Hour)); err != nil {
		t.Fatal(err)
	}
	h.Advance(30 * time.Minute) // not due
	if st := h.Statuses("late"); len(st) != 0 {
		t.Fatalf("fired before it was due: %+v", st)
	}
	h.Advance(31 * time.Minute)
	start := time.Now()
	rec := h.RequireState("late", order.Processing)
	t.Logf("an hour's delay fired %s after Advance", time.Since(start).Round(time.Millisecond))
	if rec.Version != 2 {
		t.Fatalf("delayed event applied more than once or not settled: %+v", rec)
	}
	// The delayed event kept its job id.
	var late []contract.Status
	for _, st := range h.Statuses("late") {
		if st.Event == "start_processing" {
			late = append(late, st)
		}
	}
	if len(late) != 1 || late[0].JobID != "late-1" {
		t.Fatalf("delayed event's statuses: %+v", late)
	}
}
