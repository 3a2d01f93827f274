package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/worker"
)

// holdGateway is the order workflow's gateway for the inventory tests: an
// order whose id starts with "decline-" is declined (it fails), one that
// starts with "hold-" waits in its authorization until the test ends (its
// work stays pending), the others pass at once.
type holdGateway struct{ release chan struct{} }

func (g *holdGateway) FetchOrder(_ context.Context, id, _ string) (order.Details, error) {
	return order.Details{ID: id, AmountCents: 100, Currency: "EUR", Items: 1}, nil
}

func (g *holdGateway) Authorize(ctx context.Context, d order.Details, _ string) (string, error) {
	switch {
	case strings.HasPrefix(d.ID, "decline-"):
		return "", order.ErrDeclined
	case strings.HasPrefix(d.ID, "hold-"):
		select {
		case <-g.release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return "pay-" + d.ID, nil
}

func (g *holdGateway) Capture(context.Context, string, string) error { return nil }

// inventoryBundle is a server with a worker running the order workflow on
// holdGateway, and a client of it.
type inventoryBundle struct {
	url    string
	client *client.Client
	js     jetstream.JetStream
	worker *worker.Worker
}

func startInventory(t *testing.T, cfg worker.Config) inventoryBundle {
	t.Helper()
	srv := natstest.Server(t)
	gw := &holdGateway{release: make(chan struct{})}
	wf, err := order.NewWorkflow(order.Config{}, gw)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Queue.Partitions == 0 {
		cfg.Queue.Partitions = 4
	}
	cfg.ShutdownTimeout = 5 * time.Second
	w, err := worker.New(natstest.NATS(t, srv.ClientURL()), cfg, wf)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(gw.release)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("stop worker: %v", err)
		}
	})
	nc := natstest.NATS(t, srv.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return inventoryBundle{url: srv.ClientURL(), client: natstest.Client(t, srv.ClientURL()), js: js, worker: w}
}

// truth counts the keys of the order workflow by state, and those with
// work pending, from the state bucket itself: what the inventory must say.
func (b inventoryBundle) truth(t *testing.T, ctx context.Context) (states map[string]int, keys, pending int) {
	t.Helper()
	kv, err := b.js.KeyValue(ctx, contract.StateBucket(order.Workflow))
	if err != nil {
		t.Fatal(err)
	}
	names, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	states = map[string]int{"idle": 0, "processing": 0, "awaiting_payment": 0, "completed": 0, "failed": 0}
	for key := range names.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := contract.DecodeState(e.Value())
		if err != nil {
			t.Fatal(err)
		}
		states[rec.State]++
		keys++
		if len(rec.Pending) > 0 {
			pending++
		}
	}
	return states, keys, pending
}

// statsJSON runs enqueue stats --json for order and decodes its one line.
func statsJSON(t *testing.T, ctx context.Context, url string) client.Stats {
	t.Helper()
	out, errOut, code := runCLI(t, ctx, "stats", "--json", "--nats-url", url)
	if code != 0 {
		t.Fatalf("stats: code %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 {
		t.Fatalf("stats --json printed %d lines, want one per workflow (order): %q", len(lines), out)
	}
	var s client.Stats
	if err := json.Unmarshal([]byte(lines[0]), &s); err != nil {
		t.Fatalf("stats --json: %v: %q", err, out)
	}
	return s
}

// waitExact polls enqueue stats --json until it says what the state bucket
// says (the inventory's last writes of a batch may still be on their way
// when its status arrives), and fails with both if it never does.
func (b inventoryBundle) waitExact(t *testing.T, ctx context.Context, scheduled, dead int) client.Stats {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		states, keys, pending := b.truth(t, ctx)
		s := statsJSON(t, ctx, b.url)
		if maps.Equal(s.States, states) && s.Keys == keys && s.PendingWork == pending && s.Scheduled == scheduled && s.DeadLetters == dead {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v; the state bucket says states %v, %d keys, %d pending; want %d scheduled, %d dead letters",
				s, states, keys, pending, scheduled, dead)
		}
		time.Sleep(100 * time.Millisecond) // polling a count that converges: no event to wait on
	}
}

// TestInventoryByStateStatsExact: after a mixed run of 1,000 keys of the
// order workflow (keys completed, failed by a declined payment, awaiting
// payment, in processing, some with their authorization still pending;
// events rejected as invalid transitions, keys that only ever saw rejected
// events, malformed events dead-lettered, delayed events waiting), enqueue
// stats --json says exactly what the state bucket says, key by key
// counted, with the dead letters and delayed events.
func TestInventoryByStateStatsExact(t *testing.T) {
	t.Parallel()
	b := startInventory(t, worker.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := b.client

	// Every event published at once, each key's in order (a key's client
	// events wait while it has work pending), and awaited through the
	// statuses: settled once for each job but the held authorizations.
	var mu sync.Mutex
	want := map[string]bool{}
	settled := map[string]bool{}
	allSettled := make(chan struct{})
	sub, err := c.Subscribe(order.Workflow, "", func(st contract.Status) {
		mu.Lock()
		defer mu.Unlock()
		if st.Settled && want[st.JobID] && !settled[st.JobID] {
			settled[st.JobID] = true
			if len(settled) == len(want) {
				close(allSettled)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var pending []*client.PendingPublish
	send := func(key string, settles bool, events ...string) {
		for _, ev := range events {
			id := client.NewJobID()
			if settles {
				mu.Lock()
				want[id] = true
				mu.Unlock()
			}
			p, err := c.PublishAsync(order.Workflow, key, contract.Envelope{Event: ev}, client.WithJobID(id))
			if err != nil {
				t.Fatal(err)
			}
			pending = append(pending, p)
		}
	}
	for i := range 1000 {
		switch {
		case i < 300: // completed
			send(fmt.Sprintf("o-%d", i), true, "start_processing", "request_payment", "confirm_payment")
		case i < 400: // failed: declined
			send(fmt.Sprintf("decline-%d", i), true, "start_processing", "request_payment")
		case i < 550: // awaiting payment, after a rejected event
			send(fmt.Sprintf("o-%d", i), true, "start_processing", "confirm_payment", "request_payment")
		case i < 600: // authorization pending: it never settles
			send(fmt.Sprintf("hold-%d", i), true, "start_processing")
			send(fmt.Sprintf("hold-%d", i), false, "request_payment")
		case i < 950: // processing
			send(fmt.Sprintf("o-%d", i), true, "start_processing")
		default: // rejected only: never a state
			send(fmt.Sprintf("never-%d", i), true, "confirm_payment")
		}
		if len(pending) >= 1000 || i == 999 {
			for _, p := range pending {
				if _, err := p.Wait(ctx); err != nil {
					t.Fatal(err)
				}
			}
			pending = pending[:0]
		}
	}
	select {
	case <-allSettled:
	case <-ctx.Done():
		mu.Lock()
		t.Fatalf("%d of %d jobs settled", len(settled), len(want))
	}
	for i := range 20 { // dead letters
		if _, err := c.Publish(ctx, order.Workflow, fmt.Sprintf("o-%d", 700+i), contract.Envelope{Event: "no_such_event"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 { // delayed, an hour away
		if _, err := c.Publish(ctx, order.Workflow, fmt.Sprintf("o-%d", 800+i), contract.Envelope{Event: "request_payment"}, client.WithDelay(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	s := b.waitExact(t, ctx, 10, 20)
	wantStates := map[string]int{"idle": 0, "processing": 350 + 50, "awaiting_payment": 150, "completed": 300, "failed": 100}
	if !maps.Equal(s.States, wantStates) || s.Keys != 950 || s.PendingWork != 50 {
		t.Fatalf("stats %+v, want states %v, 950 keys, 50 with work pending", s, wantStates)
	}
	if st := b.worker.Stats(); st.InventoryFailures != 0 {
		t.Errorf("worker stats %+v: inventory failures", st)
	}

	// The human form says the same.
	out, errOut, code := runCLI(t, ctx, "stats", "--nats-url", b.url)
	if code != 0 || !strings.HasPrefix(out, "order: 950 keys, 50 with work pending, 10 delayed events, 20 dead letters") ||
		!strings.Contains(out, "\n  completed         300  terminal\n") {
		t.Fatalf("stats: code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestInventoryByStateKeysAndStuck: enqueue keys lists a state's keys
// oldest first, with their version and since-when, within --older-than and
// --limit; enqueue stuck lists the keys whose work has been pending, or
// whose non-terminal state has not changed, for longer than --older-than,
// the longest-waiting first, and never a key in a terminal state.
func TestInventoryByStateKeysAndStuck(t *testing.T) {
	t.Parallel()
	b := startInventory(t, worker.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := b.client
	wait := func(key, event string) {
		t.Helper()
		if _, st, err := c.PublishAndWait(ctx, order.Workflow, key, contract.Envelope{Event: event}); err != nil || st.Error != nil {
			t.Fatalf("%s %s: %v %v", key, event, err, st.Error)
		}
	}
	for _, k := range []string{"p1", "p2", "p3"} { // processing, in this order
		wait(k, "start_processing")
	}
	wait("done-1", "start_processing")
	wait("done-1", "request_payment")
	wait("done-1", "confirm_payment") // completed: terminal
	wait("hold-1", "start_processing")
	if _, err := c.Publish(ctx, order.Workflow, "hold-1", contract.Envelope{Event: "request_payment"}); err != nil {
		t.Fatal(err)
	}
	// hold-1's authorization pending: wait for its work entry.
	deadline := time.Now().Add(15 * time.Second)
	for {
		s, err := c.Stats(ctx, order.Workflow)
		if err == nil && s.PendingWork == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hold-1's work never counted: %+v %v", s, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	out, errOut, code := runCLI(t, ctx, "keys", "--state", "processing", "--json", "--nats-url", b.url)
	if code != 0 {
		t.Fatalf("keys: code %d, stderr %q", code, errOut)
	}
	var keys []client.KeyInfo
	for line := range strings.Lines(out) {
		var k client.KeyInfo
		if err := json.Unmarshal([]byte(line), &k); err != nil {
			t.Fatalf("keys --json line %q: %v", line, err)
		}
		keys = append(keys, k)
	}
	if len(keys) != 4 || keys[0].Key != "p1" || keys[1].Key != "p2" || keys[2].Key != "p3" || keys[3].Key != "hold-1" {
		t.Fatalf("keys in processing: %+v, want p1, p2, p3, hold-1", keys)
	}
	for i, k := range keys {
		if k.State != "processing" || k.Version != 1 || k.Since.IsZero() || i > 0 && k.Since.Before(keys[i-1].Since) {
			t.Fatalf("keys in processing: %+v: want each at version 1, oldest first", keys)
		}
	}
	out, errOut, code = runCLI(t, ctx, "keys", "--state", "processing", "--limit", "2", "--nats-url", b.url)
	if code != 0 || !strings.HasPrefix(out, "p1 version=1 since=") || strings.Count(out, "\n") != 2 || !strings.Contains(errOut, "--limit lists more") {
		t.Fatalf("keys --limit 2: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = runCLI(t, ctx, "keys", "--state", "processing", "--older-than", "1h", "--nats-url", b.url)
	if code != 0 || out != "" || errOut != "no key in state processing for longer than 1h0m0s\n" {
		t.Fatalf("keys --older-than 1h: code %d, stdout %q, stderr %q; want nothing on stdout, and stderr saying so", code, out, errOut)
	}
	out, errOut, code = runCLI(t, ctx, "keys", "--state", "processing", "--older-than", "1h", "--json", "--nats-url", b.url)
	if code != 0 || out != "" || errOut != "" {
		t.Fatalf("keys --older-than 1h --json: code %d, stdout %q, stderr %q; want nothing at all", code, out, errOut)
	}

	// Nothing waits 10 minutes (the default); everything not terminal
	// waits longer than a millisecond.
	out, errOut, code = runCLI(t, ctx, "stuck", "--nats-url", b.url)
	if code != 0 || out != "" || errOut != "no key stuck for longer than 10m0s\n" {
		t.Fatalf("stuck: code %d, stdout %q, stderr %q; want nothing on stdout, and stderr saying so", code, out, errOut)
	}
	out, errOut, code = runCLI(t, ctx, "stuck", "--older-than", "1ms", "--json", "--nats-url", b.url)
	if code != 0 {
		t.Fatalf("stuck --older-than 1ms: code %d, stderr %q", code, errOut)
	}
	var stuck []client.StuckKey
	for line := range strings.Lines(out) {
		var k client.StuckKey
		if err := json.Unmarshal([]byte(line), &k); err != nil {
			t.Fatalf("stuck --json line %q: %v", line, err)
		}
		stuck = append(stuck, k)
	}
	var got []string
	for _, k := range stuck {
		got = append(got, k.Key+":"+k.Reason)
		if k.Key == "hold-1" && (k.Action != "authorize_payment" || k.Attempt != 1 || k.PendingSince.IsZero() || k.State != "processing") {
			t.Errorf("hold-1 stuck as %+v: want its authorization pending", k)
		}
	}
	if want := "p1:state p2:state p3:state hold-1:work"; strings.Join(got, " ") != want {
		t.Fatalf("stuck: %v, want %s (done-1 is completed: terminal)", got, want)
	}
	out, _, code = runCLI(t, ctx, "stuck", "--older-than", "1ms", "--nats-url", b.url)
	if code != 0 || !strings.Contains(out, "hold-1 processing version=1") || !strings.Contains(out, "reason=work") ||
		!strings.Contains(out, "action=authorize_payment attempt=1") {
		t.Fatalf("stuck: code %d, stdout %q", code, out)
	}
}

// TestInventoryByStateBadInput: what stats, keys and stuck cannot take is
// refused with a message that says why: usage errors (exit 2) before
// connecting, a state or workflow the server does not know (exit 1)
// naming what there is.
func TestInventoryByStateBadInput(t *testing.T) {
	t.Parallel()
	b := startInventory(t, worker.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"keys"}, 2, "keys needs --state STATE"},
		{[]string{"keys", "--state", "processing", "--limit", "0"}, 2, "--limit 0: must be at least 1"},
		{[]string{"keys", "--state", "processing", "--limit", "-3"}, 2, "--limit -3: must be at least 1"},
		{[]string{"stuck", "--limit", "0"}, 2, "--limit 0: must be at least 1"},
		{[]string{"keys", "--state", "processing", "--limit", "10001"}, 2, "--limit 10001: at most 10000"},
		{[]string{"keys", "--state", "processing", "--older-than", "-1s"}, 2, "--older-than -1s: must not be negative"},
		{[]string{"stuck", "--older-than", "-5m"}, 2, "--older-than -5m0s: must not be negative"},
		{[]string{"stuck", "--older-than", "soon"}, 2, "invalid argument"},
		{[]string{"stats", "--state", "processing"}, 2, "--state applies only to keys"},
		{[]string{"stats", "--older-than", "1m"}, 2, "--older-than applies only to keys and stuck"},
		{[]string{"stats", "extra"}, 2, "stats takes no arguments"},
		{[]string{"keys", "order-1", "--state", "processing"}, 2, "keys takes no arguments"},
		{[]string{"status", "order-1", "--limit", "3"}, 2, "--limit applies only to dlq list, keys and stuck"},
		{[]string{"keys", "--state", "shipped"}, 1, `order has no state "shipped": unknown state (its states: idle, processing, awaiting_payment, completed, failed)`},
		{[]string{"stats", "--workflow", "nosuch"}, 1, "workflow nosuch: unknown workflow"},
		{[]string{"stuck", "--workflow", "nosuch"}, 1, "workflow nosuch: unknown workflow"},
	} {
		out, errOut, code := runCLI(t, ctx, append(c.args, "--nats-url", b.url)...)
		if code != c.code || !strings.Contains(errOut, c.want) || out != "" {
			t.Errorf("enqueue %s: code %d, stdout %q, stderr %q; want code %d and %q", strings.Join(c.args, " "), code, out, errOut, c.code, c.want)
		}
	}
}
