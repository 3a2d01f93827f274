package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/order"
)

func TestPeriodicWorkInGraph(t *testing.T) {
	t.Parallel()
	for format, want := range map[string]string{
		"mermaid": "    awaiting_payment --> awaiting_payment: payment_reminder (every 5m0s)\n",
		"dot":     `    "awaiting_payment" -> "awaiting_payment" [label="payment_reminder (every 5m0s)"];`,
	} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"graph", "--format", format}, noenv, &out, &out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("%s lacks %q:\n%s", format, want, out.String())
		}
	}
}

// TestPeriodicWorkPaymentReminderFlag: the worker binary run with
// --payment-reminder 1s reminds an order awaiting payment every second
// until it is paid; with 0 it never does.
func TestPeriodicWorkPaymentReminderFlag(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		flag string
		want bool
	}{{"1s", true}, {"0", false}} {
		t.Run(tc.flag, func(t *testing.T) {
			t.Parallel()
			w := startWorker(t, t.TempDir(), "--sim-latency", "1ms", "--payment-reminder", tc.flag)
			cl := natstest.Client(t, "nats://"+w.natsAddr)
			for _, ev := range []string{"start_processing", "request_payment"} {
				publishAndWait(t, cl, "o-1", ev)
			}
			waitOrder(t, cl, "o-1", func(rec contract.StateRecord, _ order.Data) bool { return rec.State == "awaiting_payment" })
			if !tc.want {
				time.Sleep(2500 * time.Millisecond) // a negative check: two intervals of 1s
				if _, d := readOrder(t, cl, "o-1"); d.Reminders != 0 {
					t.Fatalf("%d reminders with --payment-reminder 0", d.Reminders)
				}
				return
			}
			waitOrder(t, cl, "o-1", func(_ contract.StateRecord, d order.Data) bool { return d.Reminders >= 3 })
			publishAndWait(t, cl, "o-1", "confirm_payment")
			rec, paid := waitOrder(t, cl, "o-1", func(rec contract.StateRecord, _ order.Data) bool { return rec.State == "completed" })
			time.Sleep(2 * time.Second) // a negative check: two intervals after leaving the state
			if again, d := readOrder(t, cl, "o-1"); again.Version != rec.Version || d.Reminders != paid.Reminders {
				t.Fatalf("changed after completing: version %d -> %d, reminders %d -> %d", rec.Version, again.Version, paid.Reminders, d.Reminders)
			}
			t.Logf("%d reminders before the payment", paid.Reminders)
		})
	}
}

func publishAndWait(t *testing.T, cl *client.Client, key, event string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, st, err := cl.PublishAndWait(ctx, order.Workflow, key, contract.Envelope{Event: event}); err != nil || st.Error != nil {
		t.Fatalf("%s %s: %v %+v", key, event, err, st.Error)
	}
}

func readOrder(t *testing.T, cl *client.Client, key string) (contract.StateRecord, order.Data) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec, err := cl.State(ctx, order.Workflow, key)
	if err != nil {
		t.Fatalf("state of %s: %v", key, err)
	}
	var d order.Data
	if err := json.Unmarshal(rec.Data, &d); err != nil {
		t.Fatal(err)
	}
	return rec, d
}

// waitOrder polls key's state until ok (a count in the data, which no one
// status announces), for up to 15s.
func waitOrder(t *testing.T, cl *client.Client, key string, ok func(contract.StateRecord, order.Data) bool) (contract.StateRecord, order.Data) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rec, d := readOrder(t, cl, key)
		if ok(rec, d) {
			return rec, d
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s (version %d, reminders %d) after 15s", key, rec.State, rec.Version, d.Reminders)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
