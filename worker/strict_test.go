package worker_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/worker"
)

// Bodies whose names are not exactly "event" and "data", each at most once,
// are malformed: dead-lettered with the reason, and the key goes on with its
// next event. encoding/json alone would apply the first as "add" (it matches
// names case-insensitively), the second as its last "event", and the third
// with the unknown member ignored.
func TestStrictDecoding(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := startWorker(t, b.url, worker.Config{}, nil)
	statuses := subscribeKey(t, b.client, "k")
	ctx := context.Background()
	bodies := map[string]string{
		`{"Event":"add","data":{"n":1}}`:                 `unknown field "Event"`,
		`{"event":"close","event":"add","data":{"n":2}}`: `duplicate field "event"`,
		`{"event":"add","data":{"n":3},"extra":true}`:    `unknown field "extra"`,
	}
	for _, body := range []string{
		`{"Event":"add","data":{"n":1}}`,
		`{"event":"close","event":"add","data":{"n":2}}`,
		`{"event":"add","data":{"n":3},"extra":true}`,
	} {
		if err := rawPublish(b.conn, "tally", "k", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	// The same members in another order, and an escaped name, are fine.
	for _, body := range []string{`{"data":{"n":4},"event":"add"}`, `{"ev\u0065nt":"add","data":{"n":5}}`} {
		if err := rawPublish(b.conn, "tally", "k", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.client.Publish(ctx, "tally", "k", add(6)); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
	for i := range 6 {
		select {
		case s := <-statuses:
			if i < 3 {
				if s.Error == nil || s.Error.Code != contract.CodeMalformed || s.Version != 0 {
					t.Fatalf("status %d: %+v, want malformed", i, s)
				}
				continue
			}
			if s.Error != nil || s.Version != uint64(i-2) {
				t.Fatalf("status %d: %+v, want applied", i, s)
			}
		case <-timeout:
			t.Fatalf("%d statuses of 6 within 10s", i)
		}
	}
	if _, d := readTally(t, b.client, "k"); !slices.Equal(d.Seen, []int{4, 5, 6}) {
		t.Fatalf("applied %v, want [4 5 6]", d.Seen)
	}
	waitFor(t, 10*time.Second, "three dead letters", func() bool { return w.Stats().DeadLettered == 3 })
	dead, err := b.client.DeadLetters(ctx, "tally", 0)
	if err != nil || len(dead) != 3 {
		t.Fatalf("%d dead letters (%v), want 3", len(dead), err)
	}
	for _, d := range dead {
		want, ok := bodies[string(d.Data)]
		if !ok || !strings.HasPrefix(d.Reason, "malformed: ") || !strings.Contains(d.Reason, want) {
			t.Errorf("dead letter %s: reason %q, want malformed: ... %s", d.Data, d.Reason, want)
		}
	}
}
