package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/roles"
)

func TestPublishRefusesBadKeyBeforeBroker(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	for _, key := range []string{"a b", "a.b", "*", ">", strings.Repeat("x", 200)} {
		_, err := b.client.Publish(context.Background(), "order", key, contract.Envelope{Event: "start_processing"})
		if !errors.Is(err, contract.ErrInvalidKey) {
			t.Fatalf("key %q: %v", key, err)
		}
	}
	if n := b.pending(t); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestPublishDuplicateID(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	ctx := context.Background()
	ev := contract.Envelope{Event: "start_processing"}
	first, err := b.client.Publish(ctx, "order", "k1", ev, client.WithJobID("job-1"))
	if err != nil || first.Duplicate || first.ID != "job-1" {
		t.Fatalf("first: %+v %v", first, err)
	}
	second, err := b.client.Publish(ctx, "order", "k1", ev, client.WithJobID("job-1"))
	if err != nil || !second.Duplicate || second.Sequence != first.Sequence {
		t.Fatalf("second: %+v %v", second, err)
	}
	if n := b.pending(t); n != 1 {
		t.Fatalf("%d messages stored, want 1", n)
	}
}

func TestPublishQueueFull(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{QueueLimit: 10})
	ctx := context.Background()
	for i := range 10 {
		if _, err := b.client.Publish(ctx, "order", "k", contract.Envelope{Event: "e"}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	_, err := b.client.Publish(ctx, "order", "k", contract.Envelope{Event: "e"})
	if !errors.Is(err, client.ErrQueueFull) {
		t.Fatalf("11th publish: %v", err)
	}
	p, err := b.client.PublishAsync("order", "k", contract.Envelope{Event: "e"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); !errors.Is(err, client.ErrQueueFull) {
		t.Fatalf("async 11th publish: %v", err)
	}
}

// TestProducerClientBadInput: each bad input gets its own clear error, before the
// broker where it can be told there, and nothing else is lost: a good event
// still goes in afterwards.
func TestProducerClientBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{MaxPayload: 1024})
	ctx := context.Background()
	for _, c := range []struct {
		name          string
		workflow, key string
		ev            contract.Envelope
		opts          []client.PublishOption
		want          error
		says          string
	}{
		{"bad key", "order", "a.b", contract.Envelope{Event: "e"}, nil, contract.ErrInvalidKey, "A-Z a-z 0-9 - _ ="},
		{"empty key", "order", "", contract.Envelope{Event: "e"}, nil, contract.ErrInvalidKey, "empty"},
		{"bad workflow", "Order!", "k", contract.Envelope{Event: "e"}, nil, contract.ErrInvalidWorkflow, "a-z 0-9 - _"},
		{"empty event", "order", "k", contract.Envelope{}, nil, client.ErrInvalidEvent, "event name is empty"},
		{"data not JSON", "order", "k", contract.Envelope{Event: "e", Data: []byte("{nope")}, nil, client.ErrInvalidEvent, "not valid JSON"},
		{"bad job id", "order", "k", contract.Envelope{Event: "e"}, []client.PublishOption{client.WithJobID("a\nb")}, contract.ErrInvalidJobID, "control character"},
		{"too large", "order", "k", contract.Envelope{Event: "e", Data: []byte(`"` + strings.Repeat("x", 2000) + `"`)}, nil, client.ErrPayloadTooLarge, "payload too large"},
		{"not provisioned", "nosuch", "k", contract.Envelope{Event: "e"}, nil, client.ErrNotProvisioned, "has a worker started?"},
	} {
		_, err := b.client.Publish(ctx, c.workflow, c.key, c.ev, c.opts...)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want %v saying %q", c.name, err, c.want, c.says)
		}
		if _, _, err := b.client.PublishAndWait(ctx, c.workflow, c.key, c.ev, c.opts...); !errors.Is(err, c.want) {
			t.Errorf("%s, and wait: %v, want %v", c.name, err, c.want)
		}
		if c.want == client.ErrPayloadTooLarge || c.want == client.ErrNotProvisioned {
			continue // found by the server, when the event is sent
		}
		if _, err := b.client.PublishAsync(c.workflow, c.key, c.ev, c.opts...); !errors.Is(err, c.want) {
			t.Errorf("%s, async: %v, want %v", c.name, err, c.want)
		}
	}
	if n := b.pending(t); n != 0 {
		t.Fatalf("%d events stored from bad input", n)
	}
	if _, err := b.client.Publish(ctx, "order", "k", contract.Envelope{Event: "e"}); err != nil {
		t.Fatal(err)
	}
}

// TestIdempotencyKeyConflictWhileQueued: no worker has taken the first
// event yet, so only the stream knows the id; a second use is still judged
// by the original's key and event, not reported a plain duplicate.
func TestIdempotencyKeyConflictWhileQueued(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{Partitions: 1})
	ctx := context.Background()
	start := contract.Envelope{Event: "start_processing"}
	first, err := b.client.Publish(ctx, "order", "k1", start, client.WithJobID("job-x"))
	if err != nil || first.Duplicate {
		t.Fatalf("first: %+v %v", first, err)
	}
	dup, err := b.client.Publish(ctx, "order", "k1", start, client.WithJobID("job-x"))
	if err != nil || !dup.Duplicate || dup.Key != "k1" || dup.Sequence != first.Sequence || dup.Taken || dup.At.IsZero() {
		t.Fatalf("same key and event: %+v %v, want a duplicate of sequence %d, queued", dup, err, first.Sequence)
	}
	for _, tc := range []struct{ key, event string }{{"k2", "start_processing"}, {"k1", "confirm_payment"}} {
		_, err := b.client.Publish(ctx, "order", tc.key, contract.Envelope{Event: tc.event}, client.WithJobID("job-x"))
		var conflict *client.IDConflictError
		if !errors.Is(err, client.ErrIDConflict) || !errors.As(err, &conflict) || conflict.Held.Key != "k1" || conflict.Held.Event != "start_processing" {
			t.Fatalf("%s %s: %v, want a conflict with k1", tc.key, tc.event, err)
		}
		if !strings.Contains(err.Error(), "held by key k1 (event start_processing)") {
			t.Fatalf("message %q does not name the key", err)
		}
		p, err := b.client.PublishAsync("order", tc.key, contract.Envelope{Event: tc.event}, client.WithJobID("job-x"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(ctx); !errors.Is(err, client.ErrIDConflict) {
			t.Fatalf("async %s %s: %v, want a conflict", tc.key, tc.event, err)
		}
	}
	if n := b.pending(t); n != 1 {
		t.Fatalf("stored %d events, want 1", n)
	}
}

// TestPublishAsyncLookUpsBatched: the look-ups of many job ids given to
// PublishAsync go to the server in batches, and each event still gets its
// own answer: a plain ack for an id no claim holds (or a claim deleted), a
// Duplicate for one held by the same key and event, an IDConflictError
// (Stored) for one held by another key or event; ids made into a hashed
// bucket key included.
func TestPublishAsyncLookUpsBatched(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Every look-up the server is asked, counted in job ids.
	spy := natstest.NATS(t, b.url)
	var mu sync.Mutex
	requests, ids, largest := 0, 0, 0
	count := func(m *nats.Msg) {
		n := 1 // one id per request, in the subject
		if m.Subject == "$JS.API.DIRECT.GET.KV_"+contract.JobsBucket("order") {
			var req struct {
				MultiLast []string `json:"multi_last"`
			}
			if err := json.Unmarshal(m.Data, &req); err != nil {
				t.Errorf("look-up %q: %v", m.Data, err)
			}
			n = len(req.MultiLast)
		}
		mu.Lock()
		requests, ids, largest = requests+1, ids+n, max(largest, n)
		mu.Unlock()
	}
	for _, s := range []string{"$JS.API.DIRECT.GET.KV_" + contract.JobsBucket("order"), "$JS.API.DIRECT.GET.KV_" + contract.JobsBucket("order") + ".>"} {
		if _, err := spy.Subscribe(s, count); err != nil {
			t.Fatal(err)
		}
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}

	const n = 500
	kinds := []string{"free", "duplicate", "other key", "other event", "deleted", "hashed duplicate"}
	id := func(i int) string {
		if kinds[i%len(kinds)] == "hashed duplicate" {
			return "order " + strconv.Itoa(i) + "/x" // not a safe bucket key as it is
		}
		return "job-" + strconv.Itoa(i)
	}
	start := contract.Envelope{Event: "start_processing"}
	var claims []contract.Job
	for i := range n {
		j := contract.Job{ID: id(i), Key: "k" + strconv.Itoa(i), Event: start.Event, Sequence: 1_000_000 + uint64(i), At: time.Now()}
		switch kinds[i%len(kinds)] {
		case "free":
			continue
		case "other key":
			j.Key = "elsewhere"
		case "other event":
			j.Event = "confirm_payment"
		}
		claims = append(claims, j)
	}
	jobs, err := b.conn.Jobs(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range jobs.Claim(ctx, claims) {
		if c.Err != nil || c.Outcome != contract.Claimed {
			t.Fatalf("claim: %+v", c)
		}
	}
	kv, err := jetstream.New(natstest.NATS(t, b.url))
	if err != nil {
		t.Fatal(err)
	}
	bucket, err := kv.KeyValue(ctx, contract.JobsBucket("order"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if kinds[i%len(kinds)] == "deleted" {
			if err := bucket.Delete(ctx, contract.JobKey(id(i))); err != nil {
				t.Fatal(err)
			}
		}
	}

	pending := make([]*client.PendingPublish, n)
	for i := range n {
		if pending[i], err = b.client.PublishAsync("order", "k"+strconv.Itoa(i), start, client.WithJobID(id(i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	for i, p := range pending {
		ack, err := p.Wait(ctx)
		kind := kinds[i%len(kinds)]
		var conflict *client.IDConflictError
		switch kind {
		case "free", "deleted":
			if err != nil || ack.Duplicate || ack.Sequence == 0 || ack.ID != id(i) {
				t.Errorf("%d (%s): %+v %v, want a plain ack", i, kind, ack, err)
			}
		case "duplicate", "hashed duplicate":
			if err != nil || !ack.Duplicate || !ack.Taken || ack.Key != "k"+strconv.Itoa(i) || ack.Sequence != 1_000_000+uint64(i) {
				t.Errorf("%d (%s): %+v %v, want a duplicate of sequence %d", i, kind, ack, err, 1_000_000+i)
			}
		case "other key", "other event":
			if !errors.As(err, &conflict) || !conflict.Stored || conflict.Held.Sequence != 1_000_000+uint64(i) || conflict.Key != "k"+strconv.Itoa(i) {
				t.Errorf("%d (%s): %+v %v, want a conflict, stored", i, kind, ack, err)
			}
		}
	}
	if t.Failed() {
		return
	}

	// The spy sees the look-ups on its own connection: wait for them all.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		r, got, most := requests, ids, largest
		mu.Unlock()
		if got >= n {
			t.Logf("%d ids looked up in %d requests, the largest of %d", got, r, most)
			// How many batches depends on the machine's pace (a batch
			// gathers for a millisecond); that there are some does not.
			if got != n || most < 2 {
				t.Fatalf("%d ids looked up in %d requests, the largest of %d: want %d ids in batches", got, r, most, n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server was asked for %d of %d ids, in %d requests", got, n, r)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPublishAsyncLookUpUnanswered: when a batch's look-up is never
// answered (here the connection may not make it), Wait still returns, after
// about Config.Timeout, with the event stored and nothing said of its id,
// as for a look-up lost; a lost batch costs that wait once, not once per
// event.
func TestPublishAsyncLookUpUnanswered(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const timeout = time.Second
	// Events and replies only: no look-up of a job id's claim. A claim the
	// look-up would have found: of another key.
	c, conn, denied := producerOn(t, []string{"orderly.events.order.*"}, []string{"_INBOX.>"}, timeout,
		contract.Job{ID: "job-0", Key: "elsewhere", Event: "start_processing", Sequence: 99, At: time.Now()})

	const n = 20
	pending := make([]*client.PendingPublish, n)
	for i := range n {
		var err error
		if pending[i], err = c.PublishAsync("order", "k"+strconv.Itoa(i), contract.Envelope{Event: "start_processing"}, client.WithJobID("job-"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	began := time.Now()
	for i, p := range pending {
		t0 := time.Now()
		ack, err := p.Wait(ctx)
		if err != nil || ack.Duplicate || ack.Sequence != uint64(i+1) {
			t.Fatalf("%d: %+v %v, want the event stored, nothing said of its id", i, ack, err)
		}
		if d := time.Since(t0); d > timeout+5*time.Second {
			t.Fatalf("%d: Wait took %s, Timeout %s", i, d, timeout)
		}
	}
	if d := time.Since(began); d > n*timeout*3/4 {
		t.Fatalf("%d Waits took %s: more than a Timeout (%s) each", n, d, timeout)
	}
	select {
	case e := <-denied:
		if !strings.Contains(e, "Permissions Violation") || !strings.Contains(e, "DIRECT.GET") {
			t.Fatalf("the connection's error: %s", e)
		}
	case <-ctx.Done():
		t.Fatal("the server never refused a look-up: the test proves nothing")
	}
	if info, err := conn.Info(ctx, "order"); err != nil || info.Pending != n {
		t.Fatalf("%+v %v: want the %d events stored", info, err, n)
	}
}

// TestPublishAsyncLookUpsOnOldPermissions: a producer still on the
// permissions of before batched look-ups (it may read one claim at a time,
// not send a batch) has the batch refused; its Waits then look each id up
// alone, and still report duplicates and conflicts, without waiting out
// Config.Timeout for the batch's answer.
func TestPublishAsyncLookUpsOnOldPermissions(t *testing.T) {
	t.Parallel()
	p, err := roles.For(roles.Producer, "order")
	if err != nil {
		t.Fatal(err)
	}
	batch := "$JS.API.DIRECT.GET.KV_" + contract.JobsBucket("order")
	old := slices.DeleteFunc(slices.Clone(p.Publish), func(s string) bool { return s == batch })
	if len(old) != len(p.Publish)-1 {
		t.Fatalf("the producer role has no %s to take away: %v", batch, p.Publish)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const timeout = 10 * time.Second
	start := contract.Envelope{Event: "start_processing"}
	// Each round's ids are new: the stream itself would find the
	// second round's publishes duplicates of the first's.
	c, _, denied := producerOn(t, old, p.Subscribe, timeout,
		contract.Job{ID: "job-dup-0", Key: "k-dup", Event: start.Event, Sequence: 77, At: time.Now()},
		contract.Job{ID: "job-other-0", Key: "elsewhere", Event: start.Event, Sequence: 78, At: time.Now()},
		contract.Job{ID: "job-dup-1", Key: "k-dup", Event: start.Event, Sequence: 77, At: time.Now()},
		contract.Job{ID: "job-other-1", Key: "elsewhere", Event: start.Event, Sequence: 78, At: time.Now()})

	began := time.Now()
	// Twice: the first round finds the batch refused, the second starts
	// out looking each id up alone.
	for round := range 2 {
		r := strconv.Itoa(round)
		ids := map[string]string{"k-free": "job-free-" + r, "k-dup": "job-dup-" + r, "k-other": "job-other-" + r}
		pending := map[string]*client.PendingPublish{}
		for key, id := range ids {
			if pending[key], err = c.PublishAsync("order", key, start, client.WithJobID(id)); err != nil {
				t.Fatal(err)
			}
		}
		for key, p := range pending {
			ack, err := p.Wait(ctx)
			var conflict *client.IDConflictError
			switch key {
			case "k-dup":
				if err != nil || !ack.Duplicate || !ack.Taken || ack.Sequence != 77 {
					t.Errorf("round %d, %s: %+v %v; want a duplicate of sequence 77", round, key, ack, err)
				}
			case "k-other":
				if !errors.As(err, &conflict) || !conflict.Stored || conflict.Held.Key != "elsewhere" {
					t.Errorf("round %d, %s: %+v %v; want a conflict with the key elsewhere, stored", round, key, ack, err)
				}
			default:
				if err != nil || ack.Duplicate || ack.Sequence == 0 {
					t.Errorf("round %d, %s: %+v %v; want a plain ack", round, key, ack, err)
				}
			}
		}
	}
	if d := time.Since(began); d >= timeout {
		t.Errorf("the Waits took %s: one waited out Config.Timeout (%s) for a refused batch", d, timeout)
	}
	select {
	case e := <-denied:
		if !strings.Contains(e, "Permissions Violation") || !strings.Contains(e, `"`+batch+`"`) {
			t.Fatalf("the connection's error: %s", e)
		}
	case <-ctx.Done():
		t.Fatal("the server never refused the batch: the test proves nothing")
	}
}

// producerOn starts a server with an admin and a user "producer" allowed
// publish and subscribe, provisions the order workflow with claims of
// jobs, and connects a client as the producer with Config.Timeout timeout.
// It returns the client, the admin's connection, and the server's refusals
// to the producer as they come.
func producerOn(t *testing.T, publish, subscribe []string, timeout time.Duration, jobs ...contract.Job) (*client.Client, *queue.Conn, <-chan string) {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir(), Users: []embedded.User{
		{Name: "admin", Password: "a"},
		{Name: "producer", Password: "p", Publish: publish, Subscribe: subscribe},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := queue.Connect(ctx, queue.Config{URLs: []string{srv.ClientURL()}, User: "admin", Password: "a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	if _, err := conn.Provision(ctx, queue.Spec{Workflow: "order"}); err != nil {
		t.Fatal(err)
	}
	bucket, err := conn.Jobs(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range bucket.Claim(ctx, jobs) {
		if c.Err != nil {
			t.Fatal(c.Err)
		}
	}
	denied := make(chan string, 100)
	c, err := client.Connect(srv.ClientURL(), client.Config{Timeout: timeout}, nats.UserInfo("producer", "p"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case denied <- err.Error():
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, conn, denied
}
