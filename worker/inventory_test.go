package worker_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

// inventoryTruth counts keys by state and those with work pending, from
// the state records of keys.
func inventoryTruth(t *testing.T, cl *client.Client, keys ...string) (map[string]int, int) {
	t.Helper()
	states := map[string]int{"open": 0, "closed": 0, "waiting": 0}
	pending := 0
	for _, k := range keys {
		rec, err := cl.State(context.Background(), "tally", k)
		if errors.Is(err, client.ErrNoState) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		states[rec.State]++
		if len(rec.Pending) > 0 {
			pending++
		}
	}
	return states, pending
}

// waitInventory waits until the inventory counts what the state records
// say, and fails with both if it does not within d.
func waitInventory(t *testing.T, cl *client.Client, d time.Duration, keys ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		states, pending := inventoryTruth(t, cl, keys...)
		s, err := cl.Stats(context.Background(), "tally")
		if err == nil && maps.Equal(s.States, states) && s.PendingWork == pending {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("inventory %+v (%v); the states say %v, %d with work pending", s, err, states, pending)
		}
		time.Sleep(20 * time.Millisecond) // a count converging: no event says when
	}
}

// TestInventoryByStateRepairAfterCrash: a worker stopped dead in the middle
// of commits leaves the inventory stale in each of the ways a kill -9 can:
// a key with the entry of the state it left (its events committed, not
// acknowledged), a key whose action's outcome was committed with neither
// its old entry nor its work entry removed (no event to come again), and a
// key with the entry of a state its commit never reached. The worker that
// takes its partitions over repairs all three, and the counts are exact
// again, with nothing else to set it off.
func TestInventoryByStateRepairAfterCrash(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := worker.Config{
		// A partition handed over by a member that dies before it lets go
		// gets the events it held after the ack wait (its pin moves on,
		// and no rewind is due): short here.
		Queue: worker.QueueConfig{Partitions: 2, MemberTTL: time.Second, PinnedTTL: time.Second, AckWait: 2 * time.Second},
		ID:    "w1", RetryBackoff: 10 * time.Millisecond,
	}
	slow := func(_ context.Context, c worker.ActionCall[tally]) (any, error) {
		return nil, worker.Permanent(errors.New("refused")) // work_failed: open -> closed
	}
	if os.Getenv("ORDERLY_TEST_LOG") != "" {
		l := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"}).Level(zerolog.DebugLevel).With().Timestamp().Str("w", "w1").Logger()
		cfg.Logger = &l
	}
	w1, err := worker.New(natstest.NATS(t, b.url), cfg, tallyWorkflow(t, slow))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	commits := map[string]int{}
	died := make(chan string, 3)
	worker.SetCrash(w1, func(key, stage string) bool {
		mu.Lock()
		defer mu.Unlock()
		if stage == "before" {
			commits[key]++
		}
		n := commits[key]
		die := false
		switch key {
		case "k1": // wait (open -> waiting), then back: dies after it
			die = stage == "after" && n == 2
		case "k2": // work (its action starts), then its outcome: dies after it
			die = stage == "after" && n == 2
		case "k3": // add, then wait: dies before it is written
			die = stage == "before" && n == 2
		}
		if die {
			died <- key
		}
		return die
	})
	if err := w1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	publish := func(key string, ev contract.Envelope) {
		t.Helper()
		if _, err := b.client.Publish(ctx, "tally", key, ev); err != nil {
			t.Fatal(err)
		}
	}
	// The first event of each key committed on its own (not in one batch
	// with the second).
	for key, ev := range map[string]contract.Envelope{"k1": {Event: "wait"}, "k3": add(1)} {
		if _, st, err := b.client.PublishAndWait(ctx, "tally", key, ev); err != nil || st.Error != nil {
			t.Fatal(err, st.Error)
		}
	}
	publish("k1", contract.Envelope{Event: "back"})
	publish("k2", contract.Envelope{Event: "work"})
	publish("k3", contract.Envelope{Event: "wait"})
	for range 3 {
		select {
		case <-died:
		case <-time.After(30 * time.Second):
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("waited 30s for the actors to stop dead; commits so far %v", commits)
		}
	}

	// The inventory is stale now, as a kill -9 there leaves it.
	s, err := b.client.Stats(ctx, "tally")
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{"open": 3, "waiting": 2, "closed": 1}; !maps.Equal(s.States, want) || s.PendingWork != 1 {
		t.Fatalf("after the crash the inventory is %+v, want states %v and 1 pending: the crash left it otherwise", s, want)
	}
	dead, kill := context.WithCancel(context.Background())
	kill()
	_ = w1.Stop(dead) // hard: nothing more of it

	cfg.Logger = nil
	w2 := startWorker(t, b.url, worker.Config{Queue: cfg.Queue, ID: "w2"}, slow)
	waitInventory(t, b.client, 30*time.Second, "k1", "k2", "k3")
	states, pending := inventoryTruth(t, b.client, "k1", "k2", "k3")
	if want := map[string]int{"open": 1, "waiting": 1, "closed": 1}; !maps.Equal(states, want) || pending != 0 {
		t.Fatalf("states %v, %d pending; want %v", states, pending, want)
	}
	if st := w2.Stats(); st.InventoryRepairs < 2 || st.InventoryFailures != 0 {
		t.Errorf("w2 stats %+v: want at least 2 keys repaired (k1, k2), no failure", st)
	}
	t.Logf("w2 checked %d keys and repaired %d", w2.Stats().InventoryChecks, w2.Stats().InventoryRepairs)
}

// TestInventoryByStateOff: a worker with DisableInventory makes no
// inventory, says so in its workflow's description, and Stats refuses with
// ErrNoInventory rather than counting nothing. A worker with the inventory
// that comes after it enters every key the state bucket holds.
func TestInventoryByStateOff(t *testing.T) {
	t.Parallel()
	b := setup(t)
	off, err := worker.New(natstest.NATS(t, b.url), worker.Config{Queue: worker.QueueConfig{Partitions: 2}, DisableInventory: true}, tallyWorkflow(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := off.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var keys []string
	for i := range 50 {
		key := fmt.Sprintf("k%d", i)
		keys = append(keys, key)
		ev := contract.Envelope{Event: "wait"}
		if i%3 == 0 {
			ev = add(i)
		}
		if _, st, err := b.client.PublishAndWait(ctx, "tally", key, ev); err != nil || st.Error != nil {
			t.Fatal(err, st.Error)
		}
	}
	info, err := b.client.Workflow(ctx, "tally")
	if err != nil || info.Inventory {
		t.Fatalf("description %+v, %v: want inventory false", info, err)
	}
	if _, err := b.client.Stats(ctx, "tally"); !errors.Is(err, client.ErrNoInventory) {
		t.Fatalf("Stats = %v, want ErrNoInventory", err)
	}
	if n, err := b.conn.IndexCount(ctx, "tally", contract.IndexSubject("tally")+".>"); err == nil {
		t.Fatalf("an inventory with %d entries, want none", n)
	}
	if err := off.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	on := startWorker(t, b.url, worker.Config{Queue: worker.QueueConfig{Partitions: 2}}, nil)
	waitInventory(t, b.client, 30*time.Second, keys...)
	if s, err := b.client.Stats(ctx, "tally"); err != nil || s.Keys != 50 {
		x := b.conn.Index("tally", 1, func(string) {})
		defer func() { _ = x.Close(ctx) }()
		for _, k := range keys {
			es, _ := x.Entries(ctx, k)
			rec, _ := b.client.State(ctx, "tally", k)
			if len(es.States) != 1 {
				t.Logf("%s: state %s v%d entered %d updated %s: entries %+v", k, rec.State, rec.Version, rec.Entered, rec.UpdatedAt, es.States)
			}
		}
		t.Fatalf("stats after the backfill: %+v, %v; want 50 keys", s, err)
	}
	if st := on.Stats(); st.InventoryChecks < 50 {
		t.Errorf("worker stats %+v: want the 50 keys checked", st)
	}
}
