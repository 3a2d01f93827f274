package worker_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/worker"
)

// TestPerKeyOrderWhenEventsAreGivenBack: an event whose key's state cannot
// be loaded goes back to the stream, to be delivered again; the key's later
// events must wait for it, not be applied before it. The state is
// undecodable until the test repairs it, between two deliveries of the
// first event, and the second event comes then.
func TestPerKeyOrderWhenEventsAreGivenBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b.url, worker.Config{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bucket, err := b.conn.Bucket(ctx, "tally")
	if err != nil {
		t.Fatal(err)
	}
	// A good record, as the worker writes it: the key "other" after add(0).
	if _, err := b.client.Publish(ctx, "tally", "other", add(0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the state of key other", func() bool {
		rec, err := b.client.State(ctx, "tally", "other")
		return err == nil && rec.Version == 1
	})
	good, _, err := bucket.Get(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	rev, err := bucket.Put(ctx, "k", []byte("{not a record"), 0)
	if err != nil {
		t.Fatal(err)
	}

	nc, err := nats.Connect(b.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	type nak struct{ seq, deliveries uint64 }
	naked := make(chan nak, 64)
	sub, err := nc.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.ORDERLY_EVENTS_TALLY.*", func(m *nats.Msg) {
		var a struct {
			StreamSeq  uint64 `json:"stream_seq"`
			Deliveries uint64 `json:"deliveries"`
		}
		if json.Unmarshal(m.Data, &a) == nil {
			naked <- nak{a.StreamSeq, a.Deliveries}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	statuses := subscribeKey(t, b.client, "k")

	first, err := b.client.Publish(ctx, "tally", "k", add(1))
	if err != nil {
		t.Fatal(err)
	}
	// Its second delivery fails too, and it goes back for two seconds.
	for n := (nak{}); n.seq != first.Sequence || n.deliveries < 2; {
		select {
		case n = <-naked:
		case s := <-statuses:
			t.Fatalf("status of job %s (version %d, error %v) while the state cannot be loaded", s.JobID, s.Version, s.Error)
		case <-ctx.Done():
			t.Fatal("the first event did not go back to the stream twice")
		}
	}
	if _, err := bucket.Put(ctx, "k", good, rev); err != nil {
		t.Fatal(err)
	}
	second, err := b.client.Publish(ctx, "tally", "k", add(2))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []client.PubAck{first, second} {
		select {
		case s := <-statuses:
			if s.JobID != want.ID || s.Error != nil {
				t.Fatalf("status of job %s (version %d, error %v), want job %s (seq %d): applied out of order", s.JobID, s.Version, s.Error, want.ID, want.Sequence)
			}
		case <-ctx.Done():
			t.Fatalf("no status of job %s once the state could be loaded", want.ID)
		}
	}
	rec, d := readTally(t, b.client, "k")
	if !slices.Equal(d.Seen, []int{0, 1, 2}) || rec.Version != 3 {
		t.Fatalf("version %d, applied %v; want version 3, applied [0 1 2]", rec.Version, d.Seen)
	}
}
