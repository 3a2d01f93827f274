package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/order"
)

// TestInventoryByStateClient: against a worker running the order workflow,
// Workflows and Workflow describe it (states with terminal flags, events,
// diagram), Stats counts its keys by state as they move, and Keys lists a
// state's keys oldest first, within OlderThan and Limit; bad queries are
// refused with errors that say why.
func TestInventoryByStateClient(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	startOrderWorker(t, srv.ClientURL())
	c := natstest.Client(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	wfs, err := c.Workflows(ctx)
	if err != nil || len(wfs) != 1 || wfs[0].Name != order.Workflow {
		t.Fatalf("Workflows = %+v, %v", wfs, err)
	}
	info := wfs[0]
	if info.Initial != "idle" || !info.Inventory || !strings.HasPrefix(info.Mermaid, "stateDiagram-v2") ||
		len(info.States) != 5 || !info.States[3].Terminal || info.States[1].Terminal || len(info.Events) == 0 {
		t.Fatalf("order described as %+v", info)
	}
	if _, err := c.Workflow(ctx, "nosuch"); !errors.Is(err, client.ErrUnknownWorkflow) {
		t.Fatalf("Workflow(nosuch) = %v, want ErrUnknownWorkflow", err)
	}

	// Three keys into processing... one by one, so they enter in order.
	for _, k := range []string{"o1", "o2", "o3"} {
		if _, _, err := c.PublishAndWait(ctx, order.Workflow, k, contract.Envelope{Event: "start_processing"}); err != nil {
			t.Fatal(err)
		}
	}
	// ... and one on to awaiting_payment.
	if _, _, err := c.PublishAndWait(ctx, order.Workflow, "o2", contract.Envelope{Event: "request_payment"}); err != nil {
		t.Fatal(err)
	}
	s, err := c.Stats(ctx, order.Workflow)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"idle": 0, "processing": 2, "awaiting_payment": 1, "completed": 0, "failed": 0}
	if s.Keys != 3 || s.PendingWork != 0 || len(s.States) != len(want) {
		t.Fatalf("stats %+v, want states %v", s, want)
	}
	for st, n := range want {
		if s.States[st] != n {
			t.Fatalf("stats %+v, want states %v", s, want)
		}
	}
	keys, err := c.Keys(ctx, order.Workflow, client.KeysQuery{State: "processing"})
	if err != nil || len(keys) != 2 || keys[0].Key != "o1" || keys[1].Key != "o3" || keys[0].Since.After(keys[1].Since) {
		t.Fatalf("keys in processing: %+v, %v", keys, err)
	}
	if keys[0].Version != 1 || keys[0].State != "processing" {
		t.Fatalf("o1 entered processing %+v, want at version 1", keys[0])
	}
	keys, err = c.Keys(ctx, order.Workflow, client.KeysQuery{State: "processing", Limit: 1})
	if err != nil || len(keys) != 1 || keys[0].Key != "o1" {
		t.Fatalf("first key in processing: %+v, %v", keys, err)
	}
	keys, err = c.Keys(ctx, order.Workflow, client.KeysQuery{State: "processing", OlderThan: time.Hour})
	if err != nil || len(keys) != 0 {
		t.Fatalf("keys in processing for an hour: %+v, %v", keys, err)
	}
	if _, err := c.Keys(ctx, order.Workflow, client.KeysQuery{State: "shipped"}); !errors.Is(err, client.ErrUnknownState) ||
		!strings.Contains(err.Error(), "idle, processing, awaiting_payment, completed, failed") {
		t.Fatalf("keys in an unknown state: %v", err)
	}
	for _, q := range []client.KeysQuery{{State: "idle", Limit: -1}, {State: "idle", OlderThan: -time.Second}, {}} {
		if _, err := c.Keys(ctx, order.Workflow, q); err == nil {
			t.Errorf("Keys(%+v) accepted", q)
		}
	}
}
