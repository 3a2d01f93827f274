package client_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/order"
)

// BenchmarkInventoryMillion fills the inventory of workflow order with
// ORDERLY_BENCH_INVENTORY_KEYS keys (default 100,000, so that make bench
// stays short; make bench-inventory sets 1,000,000), published as the
// worker writes them, into a real server with its file store in a temporary
// directory, and times the queries of enqueue stats, keys and stuck. The
// keys' states are interleaved in the stream as traffic leaves them: 70 %
// completed, 10 % failed, 10 % awaiting payment, 9 % processing, 1 % idle,
// one in twenty of the non-terminal ones with work pending; they entered
// their states evenly over the last two hours, oldest first.
//
//	ORDERLY_BENCH_INVENTORY_KEYS=1000000 go test -run '^$' -bench InventoryMillion -benchtime 20x -v ./client/
func BenchmarkInventoryMillion(b *testing.B) {
	n := 100_000
	if s := os.Getenv("ORDERLY_BENCH_INVENTORY_KEYS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	srv := natstest.ServerIn(b, b.TempDir())
	conn := natstest.Conn(b, srv.ClientURL())
	ctx := context.Background()
	if _, err := conn.Provision(ctx, queue.Spec{Workflow: order.Workflow, Partitions: 1}); err != nil {
		b.Fatal(err)
	}
	m := order.New(order.Config{})
	info := contract.WorkflowInfo{Name: order.Workflow, Initial: string(m.Initial()), Mermaid: m.Mermaid(), Inventory: true}
	for _, s := range m.States() {
		info.States = append(info.States, contract.WorkflowState{Name: string(s.Name), Terminal: s.Terminal})
	}
	if _, err := conn.PutWorkflow(ctx, &info); err != nil {
		b.Fatal(err)
	}
	js, err := jetstream.New(natstest.NATS(b, srv.ClientURL()), jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, contract.StateBucket(order.Workflow))
	if err != nil {
		b.Fatal(err)
	}
	// Wait for room rather than fail when the server falls behind.
	stall := jetstream.WithStallWait(time.Minute)
	now := time.Now().UTC()
	start := now.Add(-2 * time.Hour)
	counts := map[string]int{}
	work := 0
	filled := time.Now()
	for i := range n {
		key := fmt.Sprintf("order-%07d", i)
		// A spread that interleaves the states (a multiplicative hash).
		var state string
		switch h := (uint64(i) * 2654435761) % 100; {
		case h < 70:
			state = "completed"
		case h < 80:
			state = "failed"
		case h < 90:
			state = "awaiting_payment"
		case h < 99:
			state = "processing"
		default:
			state = "idle"
		}
		counts[state]++
		since := start.Add(time.Duration(i) * (2 * time.Hour / time.Duration(n)))
		e := contract.IndexEntry{Workflow: order.Workflow, Key: key, State: state, Version: 3, Since: since}
		body, err := contract.MarshalIndexEntry(&e)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync(contract.IndexStateSubject(order.Workflow, state, key), body, stall); err != nil {
			b.Fatal(err)
		}
		if state == "processing" || state == "awaiting_payment" {
			// The record Stuck reads for a key it lists.
			rec := contract.StateRecord{State: state, Version: 3, Entered: 3, UpdatedAt: since, Data: []byte("{}")}
			pending := i%20 == 0
			if pending {
				rec.Pending = []contract.PendingWork{{ID: key + "/3/fetch_order", Action: "fetch_order", JobID: "job-" + key, Attempt: 2, Since: since}}
				w := contract.WorkEntry{Workflow: order.Workflow, Key: key, Action: "fetch_order", JobID: "job-" + key, Attempt: 1, Since: since}
				wb := fmt.Appendf(nil, `{"workflow":%q,"key":%q,"action":%q,"job_id":%q,"attempt":1,"since":%q}`, w.Workflow, w.Key, w.Action, w.JobID, w.Since.Format(time.RFC3339Nano))
				if _, err := js.PublishAsync(contract.IndexWorkSubject(order.Workflow, key), wb, stall); err != nil {
					b.Fatal(err)
				}
				work++
			}
			val, err := contract.MarshalState(&rec)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := js.PublishAsync("$KV."+contract.StateBucket(order.Workflow)+"."+key, val, stall); err != nil {
				b.Fatal(err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Minute):
		b.Fatal("the inventory was not stored within 10 minutes")
	}
	_ = kv
	idx, err := js.Stream(ctx, contract.IndexStream(order.Workflow))
	if err != nil {
		b.Fatal(err)
	}
	st := idx.CachedInfo().State
	b.Logf("filled %d keys (%d entries, %d MiB) in %s: %v, %d with work pending",
		n, st.Msgs, st.Bytes>>20, time.Since(filled).Round(time.Millisecond), counts, work)

	c := natstest.Client(b, srv.ClientURL())
	b.Run("stats", func(b *testing.B) {
		for b.Loop() {
			s, err := c.Stats(ctx, order.Workflow)
			if err != nil {
				b.Fatal(err)
			}
			if s.Keys != n || s.PendingWork != work || s.States["completed"] != counts["completed"] {
				b.Fatalf("stats %+v, want %d keys, %d pending, %v", s, n, work, counts)
			}
		}
	})
	for _, state := range []string{"completed", "idle"} { // dense, sparse
		b.Run("keys-"+state+"-limit-100", func(b *testing.B) {
			for b.Loop() {
				keys, err := c.Keys(ctx, order.Workflow, client.KeysQuery{State: state, Limit: 100})
				if err != nil || len(keys) != 100 {
					b.Fatalf("%d keys, %v", len(keys), err)
				}
			}
		})
	}
	b.Run("keys-older-than-10m-limit-100", func(b *testing.B) {
		for b.Loop() {
			keys, err := c.Keys(ctx, order.Workflow, client.KeysQuery{State: "processing", OlderThan: 10 * time.Minute, Limit: 100})
			if err != nil || len(keys) != 100 {
				b.Fatalf("%d keys, %v", len(keys), err)
			}
		}
	})
	b.Run("stuck-10m-limit-100", func(b *testing.B) {
		for b.Loop() {
			keys, err := c.Stuck(ctx, order.Workflow, 10*time.Minute, 100)
			if err != nil || len(keys) != 100 {
				b.Fatalf("%d stuck keys, %v", len(keys), err)
			}
		}
	})
}
