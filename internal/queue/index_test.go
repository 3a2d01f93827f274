package queue_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// failures collects the keys an Index reports failed.
type failures struct {
	mu   sync.Mutex
	keys []string
	got  chan string
}

func newFailures() *failures { return &failures{got: make(chan string, 64)} }

func (f *failures) add(key string) {
	f.mu.Lock()
	f.keys = append(f.keys, key)
	f.mu.Unlock()
	select {
	case f.got <- key:
	default:
	}
}

// TestInventoryByStateIndexWrites: the inventory's writes of one subject
// are applied in the order they were sent, though a publish and a purge
// take different paths through the server (a purge sent first must not
// remove an entry published after it); counts read back what was written;
// a key's entries are read and repaired; a write nobody answers is given
// up on after the timeout and reported, and frees its room; Close waits for
// what is in flight and refuses what comes after.
func TestInventoryByStateIndexWrites(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	failed := newFailures()
	x := c.Index("order", 8, failed.add)
	since := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	entry := func(key, state string, v uint64) *contract.IndexEntry {
		return &contract.IndexEntry{Workflow: "order", Key: key, State: state, Version: v, Since: since}
	}
	// In and out of two states, quickly, many times: each key ends in
	// "b" (entered last), with nothing left in "a".
	for round := range 50 {
		for _, key := range []string{"k1", "k2", "k3"} {
			if err := x.Enter(ctx, entry(key, "a", uint64(2*round))); err != nil {
				t.Fatal(err)
			}
			if err := x.Leave(ctx, key, "b"); err != nil {
				t.Fatal(err)
			}
			if err := x.Enter(ctx, entry(key, "b", uint64(2*round+1))); err != nil {
				t.Fatal(err)
			}
			if err := x.Leave(ctx, key, "a"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := x.WorkBegan(ctx, &contract.WorkEntry{Workflow: "order", Key: "k1", Action: "fetch", JobID: "j1", Attempt: 1, Since: since}); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.Enter(ctx, entry("k4", "a", 1)); err == nil {
		t.Fatal("a write after Close was sent")
	}
	count := func(filter string) uint64 {
		t.Helper()
		n, err := c.IndexCount(ctx, "order", filter)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if a, b, w := count(contract.IndexStateFilter("order", "a")), count(contract.IndexStateFilter("order", "b")), count(contract.IndexWorkSubject("order", "*")); a != 0 || b != 3 || w != 1 {
		t.Fatalf("entries: %d in a, %d in b, %d work; want 0, 3, 1", a, b, w)
	}
	failed.mu.Lock()
	if len(failed.keys) > 0 {
		t.Fatalf("writes failed for %v", failed.keys)
	}
	failed.mu.Unlock()

	// A key's entries, read for a repair, and put right.
	y := c.Index("order", 8, failed.add)
	defer func() { _ = y.Close(ctx) }()
	if err := y.Restore(ctx, entry("k1", "a", 7), false); err != nil {
		t.Fatal(err)
	}
	es, err := y.Entries(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if len(es.States) != 2 || es.Work == nil || es.Work.Entry.Action != "fetch" {
		t.Fatalf("entries of k1: %+v", es)
	}
	if err := y.Restore(ctx, entry("k1", "a", 8), false); err != nil {
		t.Fatal(err) // there already: left as it is
	}
	for _, e := range es.States {
		if e.Entry.State == "a" {
			if e.Entry.Version != 7 {
				t.Fatalf("entry in a: %+v, want version 7", e)
			}
			if err := y.Delete(ctx, e.Sequence); err != nil {
				t.Fatal(err)
			}
			if err := y.Delete(ctx, e.Sequence); err != nil {
				t.Fatalf("deleting twice: %v", err)
			}
		}
	}
	if n := count(contract.IndexKeyFilter("order", "k1")); n != 1 {
		t.Fatalf("k1 has %d state entries after the repair, want 1", n)
	}

	// A write nobody answers: a subscriber takes the subjects of
	// workflow "ghost" and never replies.
	nc := natstest.NATS(t, c.NATS().ConnectedUrl())
	sub, err := nc.SubscribeSync(contract.IndexSubject("ghost") + ".>")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	z := queue.IndexWithTimeout(c, "ghost", 1, 200*time.Millisecond, failed.add)
	defer func() { _ = z.Close(ctx) }()
	if err := z.Enter(ctx, &contract.IndexEntry{Workflow: "ghost", Key: "g1", State: "a", Since: since}); err != nil {
		t.Fatal(err)
	}
	if got := natstest.Recv(t, failed.got, 10*time.Second, "the unanswered write reported"); got != "g1" {
		t.Fatalf("failed key %q, want g1", got)
	}
	// Its room is free again: a window of one takes another write.
	if err := z.Enter(ctx, &contract.IndexEntry{Workflow: "ghost", Key: "g2", State: "a", Since: since}); err != nil {
		t.Fatal(err)
	}
	if got := natstest.Recv(t, failed.got, 10*time.Second, "the second unanswered write reported"); got != "g2" {
		t.Fatalf("failed key %q, want g2", got)
	}
}

// TestIndexWorkKeysPages: WorkKeys walks every key with a work entry, once
// each, across more batches than one request returns, and not the keys
// whose work entry was removed or that have only a state entry; it stops
// when fn says so.
func TestIndexWorkKeysPages(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{Partitions: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x := c.Index("order", 64, newFailures().add)
	since := time.Date(2026, 12, 1, 5, 0, 0, 0, time.UTC)
	const n = 600 // more than two of WorkKeys' batches
	want := map[string]bool{}
	for i := range n {
		key := "w" + strconv.Itoa(i)
		if err := x.WorkBegan(ctx, &contract.WorkEntry{Workflow: "order", Key: key, Action: "fetch", JobID: key, Attempt: 1, Since: since}); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			if err := x.WorkEnded(ctx, key); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want[key] = true
	}
	if err := x.Enter(ctx, &contract.IndexEntry{Workflow: "order", Key: "idle", State: "a", Version: 1, Since: since}); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(ctx); err != nil {
		t.Fatal(err)
	}
	y := c.Index("order", 8, newFailures().add)
	defer func() { _ = y.Close(ctx) }()
	got := map[string]int{}
	if err := y.WorkKeys(ctx, func(key string) bool { got[key]++; return true }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("%d keys walked, want %d", len(got), len(want))
	}
	for key, times := range got {
		if !want[key] || times != 1 {
			t.Errorf("%s walked %d times; want once, and only keys with work", key, times)
		}
	}
	seen := 0
	if err := y.WorkKeys(ctx, func(string) bool { seen++; return seen < 3 }); err != nil || seen != 3 {
		t.Fatalf("a walk told to stop after 3: %d keys, %v", seen, err)
	}
}
