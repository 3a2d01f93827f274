package jsapi

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestDirectBatchReadsAndCounts: a batched direct get hands over what it
// asked for, in order (multi_last, a batch from a sequence, a count), finds
// nothing as no error, and says so when no server answers for a stream.
func TestDirectBatchReadsAndCounts(t *testing.T) {
	ctx, nc, js := directStream(t)
	for i := range 10 {
		for _, sub := range []string{"d.a.", "d.b."} {
			if _, err := js.Publish(ctx, sub+strconv.Itoa(i), []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	var mux ReplyMux
	defer mux.Close()

	var got []string
	_, err := DirectBatch(ctx, nc, &mux, "D", DirectRequest{MultiLast: []string{"d.*.3", "d.a.7"}}, func(sm StoredMsg) bool {
		got = append(got, sm.Subject)
		return true
	})
	if err != nil || len(got) != 3 {
		t.Fatalf("multi_last: %v, %v; want d.a.3, d.b.3, d.a.7", got, err)
	}

	got = got[:0]
	pending, err := DirectBatch(ctx, nc, &mux, "D", DirectRequest{NextFor: "d.b.*", Batch: 4}, func(sm StoredMsg) bool {
		got = append(got, string(sm.Data))
		return true
	})
	if err != nil || len(got) != 4 || got[0] != "0" || got[3] != "3" || pending != 6 {
		t.Fatalf("batch: %v, %d pending, %v; want 0..3 and 6 pending", got, pending, err)
	}

	if n, err := DirectCount(ctx, nc, &mux, "D", "d.a.*"); err != nil || n != 10 {
		t.Fatalf("count d.a.*: %d, %v; want 10", n, err)
	}
	if n, err := DirectCount(ctx, nc, &mux, "D", "d.c.*"); err != nil || n != 0 {
		t.Fatalf("count d.c.*: %d, %v; want 0", n, err)
	}
	if _, err := DirectCount(ctx, nc, &mux, "NONE", "x"); !errors.Is(err, ErrNotProvisioned) {
		t.Fatalf("a stream nobody serves: %v; want ErrNotProvisioned", err)
	}
}

// TestDirectBatchAllocatesWhatItReads: a direct get of a few messages
// allocates a few KiB, not a subscription's whole queue. A synchronous
// subscription per request allocated 512 KiB each, and a worker reading a
// key's inventory on each resume wake-up spent half its CPU clearing it.
func TestDirectBatchAllocatesWhatItReads(t *testing.T) {
	ctx, nc, js := directStream(t)
	if _, err := js.Publish(ctx, "d.a.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	var mux ReplyMux
	defer mux.Close()
	read := func() {
		n := 0
		if _, err := DirectBatch(ctx, nc, &mux, "D", DirectRequest{MultiLast: []string{"d.*.1"}}, func(StoredMsg) bool { n++; return true }); err != nil || n != 1 {
			t.Fatalf("read: %d messages, %v", n, err)
		}
	}
	read() // the mux's subscription, made once
	const reads = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range reads {
		read()
	}
	runtime.ReadMemStats(&after)
	// The whole process's allocations count, the server's among them.
	if per := (after.TotalAlloc - before.TotalAlloc) / reads; per > 64<<10 {
		t.Fatalf("%d bytes allocated per direct get of one message; want well under 64 KiB", per)
	}
}

// directStream starts a server and makes stream D (d.>, direct gets on).
func directStream(t *testing.T) (context.Context, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "D", Subjects: []string{"d.>"}, AllowDirect: true}); err != nil {
		t.Fatal(err)
	}
	return ctx, nc, js
}
