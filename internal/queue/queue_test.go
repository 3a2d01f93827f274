package queue_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

func setup(t *testing.T, spec queue.Spec) (*queue.Conn, queue.Provisioned) {
	t.Helper()
	srv := natstest.Server(t)
	c := natstest.Conn(t, srv.ClientURL())
	if spec.Workflow == "" {
		spec.Workflow = "order"
	}
	p, err := c.Provision(context.Background(), spec)
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	return c, p
}

func TestProvisionIsIdempotent(t *testing.T) {
	t.Parallel()
	c, first := setup(t, queue.Spec{Partitions: 4})
	if !first.Changed() || len(first.Created) != 4+1+6+4 { // consumers (partitions, delayed records), streams (history, timers, schedules, events, dlq, index), buckets (state, jobs, workflows, members)
		t.Fatalf("first run created %v", first.Created)
	}
	again, err := c.Provision(context.Background(), queue.Spec{Workflow: "order", Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	if again.Changed() {
		t.Fatalf("second run changed %v %v", again.Created, again.Updated)
	}
	// A replica started with another partition count keeps the stream's.
	other, err := c.Provision(context.Background(), queue.Spec{Workflow: "order", Partitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	if other.Spec.Partitions != 4 || other.Changed() {
		t.Fatalf("partitions %d, changed %v %v", other.Spec.Partitions, other.Created, other.Updated)
	}
	// A changed limit is an update, not a failure.
	upd, err := c.Provision(context.Background(), queue.Spec{Workflow: "order", Partitions: 4, QueueLimit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(upd.Updated) != 1 || !strings.Contains(upd.Updated[0], "ORDERLY_EVENTS_ORDER") {
		t.Fatalf("updated %v", upd.Updated)
	}
}

func TestProvisionConcurrently(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	var wg sync.WaitGroup
	// Replicas that start together: under -race this also catches the
	// server's race between one's stream update and another's consumer
	// create (see ensureStream).
	const n = 8
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			c := natstest.Conn(t, srv.ClientURL())
			_, err := c.Provision(context.Background(), queue.Spec{Workflow: "order"})
			errs <- err
		})
	}
	natstest.Wait(t, &wg, natstest.Timeout, "concurrent provisions")
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c := natstest.Conn(t, srv.ClientURL())
	p, err := c.Provision(context.Background(), queue.Spec{Workflow: "order"})
	if err != nil || p.Changed() {
		t.Fatalf("after concurrent runs: changed %v %v, err %v", p.Created, p.Updated, err)
	}
}

func TestValidateKey(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"order 1", "order.1", "order*", "order>", strings.Repeat("k", 200), "", "a:b", "ü"} {
		err := contract.ValidateKey(key)
		if !errors.Is(err, contract.ErrInvalidKey) || !strings.Contains(err.Error(), "A-Z a-z 0-9 - _ =") {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey naming the rule", key, err)
		}
	}
	for _, key := range []string{"order-42", "A_b=c", strings.Repeat("k", 128)} {
		if err := contract.ValidateKey(key); err != nil {
			t.Errorf("ValidateKey(%q) = %v", key, err)
		}
	}
}

func TestConnectNoServer(t *testing.T) {
	t.Parallel()
	start := time.Now()
	_, err := queue.Connect(context.Background(), queue.Config{URLs: []string{"nats://127.0.0.1:1"}, ConnectTimeout: 2 * time.Second})
	if !errors.Is(err, queue.ErrNoServer) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{})
	cl := newClient(t, c)
	one := make(chan contract.Status, 4)
	all := make(chan contract.Status, 4)
	s1, err := cl.Subscribe("order", "k1", func(s contract.Status) { one <- s })
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Unsubscribe()
	s2, err := cl.Subscribe("order", "", func(s contract.Status) { all <- s })
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Unsubscribe()
	for _, k := range []string{"k2", "k1"} {
		if err := c.PublishStatus(&contract.Status{Workflow: "order", Key: k, To: "processing", Version: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if got := natstest.Recv(t, one, natstest.Timeout, "the status of k1 on its key's subscription"); got.Key != "k1" || got.To != "processing" {
		t.Fatalf("key subscription got %+v", got)
	}
	if a, b := natstest.Recv(t, all, natstest.Timeout, "the first status on the workflow's subscription"),
		natstest.Recv(t, all, natstest.Timeout, "the second status on the workflow's subscription"); a.Key != "k2" || b.Key != "k1" {
		t.Fatalf("workflow subscription got %s, %s", a.Key, b.Key)
	}
}

// TestBucketPutFailsPlainlyWithoutAnswer: a commit whose write no stream
// takes (its bucket gone) fails with no responders, and one whose context
// has ended fails with the context's error, at once: Put's answer comes
// through the connection's reply multiplexer, which must give up on a write
// as nats.go's request did. Puts many at once, as actors commit, each get
// their own revision.
func TestBucketPutFailsPlainlyWithoutAnswer(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	c := natstest.Conn(t, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Provision(ctx, queue.Spec{Workflow: "order"}); err != nil {
		t.Fatal(err)
	}
	b, err := c.Bucket(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	revs := make([]uint64, 200)
	errs := make([]error, len(revs))
	for i := range revs {
		wg.Go(func() { revs[i], errs[i] = b.Put(ctx, "k"+strconv.Itoa(i), []byte(`{}`), 0) })
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for i, err := range errs {
		if err != nil || revs[i] == 0 || seen[revs[i]] {
			t.Fatalf("put %d of %d at once: revision %d, %v (a revision twice: answers crossed)", i, len(revs), revs[i], err)
		}
		seen[revs[i]] = true
	}

	done, stop := context.WithCancel(ctx)
	stop()
	if _, err := b.Put(done, "k", []byte(`{}`), revs[0]); !errors.Is(err, context.Canceled) {
		t.Errorf("put with its context ended: %v, want context.Canceled", err)
	}
	if err := rawJSOn(t, srv.ClientURL()).DeleteStream(ctx, "KV_orderly_state_order"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := b.Put(ctx, "k", []byte(`{}`), 0); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("put to a deleted bucket: %v, want no responders", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("put to a deleted bucket took %s: it waited out its timeout", d)
	}
}

func TestBucketCompareAndSet(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, queue.Spec{})
	ctx := context.Background()
	b, err := c.Bucket(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Get(ctx, "k"); !errors.Is(err, queue.ErrNoState) {
		t.Fatalf("get missing: %v", err)
	}
	r1, err := b.Put(ctx, "k", []byte(`{"state":"idle","version":1}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "k", []byte(`{}`), 0); !errors.Is(err, queue.ErrConflict) {
		t.Fatalf("create twice: %v", err)
	}
	p, err := b.PutAsync("k", []byte(`{"state":"processing","version":2}`), r1)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := p.Wait(ctx)
	if err != nil || r2 <= r1 {
		t.Fatalf("async put: %d %v", r2, err)
	}
	if _, err := b.Put(ctx, "k", []byte(`{}`), r1); !errors.Is(err, queue.ErrConflict) {
		t.Fatalf("stale put: %v", err)
	}
	rec, err := newClient(t, c).State(ctx, "order", "k")
	if err != nil || rec.State != "processing" || rec.Version != 2 {
		t.Fatalf("read: %+v %v", rec, err)
	}
}
