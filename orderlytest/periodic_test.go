package orderlytest_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/orderlytest"
	"github.com/orderly-dev/orderly/worker"
)

// TestControllableClockFiresPeriodicTicks: a payment reminder every five
// minutes, tested in about a second: each Advance of five minutes fires one
// reminder, a shorter one none, and once the order has left
// awaiting_payment no Advance fires any.
func TestControllableClockFiresPeriodicTicks(t *testing.T) {
	t.Parallel()
	wf, err := order.NewWorkflow(order.Config{PaymentTimeout: time.Hour}, order.NewSimGateway(order.SimConfig{}))
	if err != nil {
		t.Fatal(err)
	}
	h := orderlytest.Start(t, []worker.Workflow{wf})
	reminders := make(chan contract.Status, 16)
	sub, err := h.Client().Subscribe(order.Workflow, "o-1", func(st contract.Status) {
		if st.Event == string(order.PaymentReminder) {
			reminders <- st
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	h.SendAndWait("o-1", "start_processing", nil)
	h.SendAndWait("o-1", "request_payment", nil)
	h.RequireState("o-1", order.AwaitingPayment)

	start := time.Now()
	for i := 1; i <= 3; i++ {
		h.Advance(4 * time.Minute) // not due yet
		h.Advance(time.Minute)
		select {
		case st := <-reminders:
			if st.Error != nil || st.To != string(order.AwaitingPayment) {
				t.Fatalf("reminder %d: %+v", i, st)
			}
		case <-time.After(orderlytest.DefaultTimeout):
			t.Fatalf("no reminder %d within %s; statuses:\n%v", i, orderlytest.DefaultTimeout, h.Statuses("o-1"))
		}
		if d := reminded(t, h); d != i {
			t.Fatalf("after reminder %d the order counts %d", i, d)
		}
	}
	t.Logf("3 reminders, 5 minutes apart, in %s of real time", time.Since(start).Round(time.Millisecond))

	h.SendAndWait("o-1", "confirm_payment", nil)
	h.RequireState("o-1", order.Completed)
	h.Advance(10 * time.Minute)
	select {
	case st := <-reminders:
		t.Fatalf("a reminder after the order left awaiting_payment: %+v", st)
	case <-time.After(1500 * time.Millisecond): // a negative check: Advance's ticks come at once
	}
	if d := reminded(t, h); d != 3 {
		t.Fatalf("the completed order counts %d reminders", d)
	}
}

func reminded(t *testing.T, h *orderlytest.Harness) int {
	t.Helper()
	var d order.Data
	if err := json.Unmarshal(h.State("o-1").Data, &d); err != nil {
		t.Fatal(err)
	}
	return d.Reminders
}
