package queue_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// dlqSetup provisions workflow "order" with one partition and returns the
// connection under test and a plain JetStream client, for publishing what a
// foreign producer would.
func dlqSetup(t *testing.T) (*queue.Conn, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Server(t)
	c := natstest.Conn(t, srv.ClientURL())
	if _, err := c.Provision(context.Background(), queue.Spec{Workflow: "order", Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return c, js
}

// pullInto starts a puller that hands each event to the channel returned,
// and stops it softly when the test ends, so that the pull in progress (at
// most MaxWait) ends and leaves no nats.go goroutine behind.
func pullInto(t *testing.T, c *queue.Conn, cfg queue.PullConfig) (*queue.Puller, <-chan *queue.Msg) {
	t.Helper()
	got := make(chan *queue.Msg, 64)
	p, err := c.Pull(context.Background(), cfg, func(_ context.Context, m *queue.Msg) { got <- m })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := p.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return p, got
}

// pullN pulls the n events waiting in partition 0.
func pullN(t *testing.T, c *queue.Conn, n int) []*queue.Msg {
	t.Helper()
	ch := make(chan *queue.Msg, 64)
	p, err := c.Pull(context.Background(), queue.PullConfig{Workflow: "order", MaxWait: 100 * time.Millisecond},
		func(_ context.Context, m *queue.Msg) { ch <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop(context.Background()) }()
	var msgs []*queue.Msg
	timeout := time.After(10 * time.Second)
	for len(msgs) < n {
		select {
		case m := <-ch:
			msgs = append(msgs, m)
		case <-timeout:
			t.Fatalf("pulled %d of %d events", len(msgs), n)
		}
	}
	return msgs
}

// deadLetter pulls the n events waiting and dead-letters each with reason.
func deadLetter(t *testing.T, c *queue.Conn, n int, reason string) []*queue.Msg {
	t.Helper()
	msgs := pullN(t, c, n)
	for _, m := range msgs {
		if err := c.DeadLetter(context.Background(), "order", m, reason); err != nil {
			t.Fatal(err)
		}
		if err := m.Term(reason); err != nil {
			t.Fatal(err)
		}
	}
	return msgs
}

// newClient is a producer client on c's connection: the dead letters the
// runtime writes are listed and replayed by package client.
func newClient(t *testing.T, c *queue.Conn) *client.Client {
	t.Helper()
	cl, err := client.New(c.NATS(), client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func deadLetters(t *testing.T, c *queue.Conn) []client.DeadLetter {
	t.Helper()
	es, err := newClient(t, c).DeadLetters(context.Background(), "order", 0)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// waitPending waits until the events stream holds want events: a Term or Ack
// is sent without waiting for the server, so it shows a little later.
func waitPending(t *testing.T, c *queue.Conn, want uint64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		info, err := c.Info(context.Background(), "order")
		if err != nil {
			t.Fatal(err)
		}
		if info.Pending == want {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("%d events pending, want %d", info.Pending, want)
		case <-time.After(10 * time.Millisecond): // polling a condition
		}
	}
}

func TestDeadLetterAndReplay(t *testing.T) {
	t.Parallel()
	c, js := dlqSetup(t)
	ctx := context.Background()
	body := []byte(`{"event":"start_processing",`)
	msg := nats.NewMsg(contract.EventSubject("order", "k1"))
	msg.Data = body
	msg.Header.Set("Nats-Msg-Id", "job-1")
	msg.Header.Set("X-Trace", "abc")
	// A JetStream control header would act on the dead letter's copy too.
	msg.Header.Set("Nats-Expected-Stream", "ORDERLY_EVENTS_ORDER")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	m := pullN(t, c, 1)[0]
	reason := "malformed: unexpected end of JSON input\nsecond line"
	// Twice, as after a lost Term: stored once.
	for range 2 {
		if err := c.DeadLetter(ctx, "order", m, reason); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Term(contract.CodeMalformed); err != nil {
		t.Fatal(err)
	}
	waitPending(t, c, 0)

	es := deadLetters(t, c)
	if len(es) != 1 {
		t.Fatalf("%d dead letters, want 1: %+v", len(es), es)
	}
	e := es[0]
	if e.Workflow != "order" || e.Key != "k1" || e.JobID != "job-1" || e.Subject != "orderly.events.order.0.k1" ||
		e.Reason != "malformed: unexpected end of JSON input second line" || e.Delivered != 1 ||
		string(e.Data) != string(body) || time.Since(e.At) > time.Minute {
		t.Fatalf("entry %+v", e)
	}
	for k := range e.Headers {
		if k != "Nats-Msg-Id" && k != "X-Trace" {
			t.Errorf("header %s kept", k)
		}
	}
	if !slices.Equal(e.Headers["X-Trace"], []string{"abc"}) || !slices.Equal(e.Headers["Nats-Msg-Id"], []string{"job-1"}) {
		t.Fatalf("headers %v", e.Headers)
	}

	cl := newClient(t, c)
	ack, err := cl.Replay(ctx, "order", e.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if want := "job-1.replay." + itoa(e.Sequence); ack.ID != want || ack.Duplicate {
		t.Fatalf("ack %+v, want id %s", ack, want)
	}
	waitPending(t, c, 1)
	if es := deadLetters(t, c); len(es) != 0 {
		t.Fatalf("dead letters after Replay: %+v", es)
	}
	if _, err := cl.Replay(ctx, "order", e.Sequence); !errors.Is(err, client.ErrNoDeadLetter) {
		t.Fatalf("second Replay: %v", err)
	}

	// The replayed event is the original body and headers under the new id,
	// and can be dead-lettered again.
	m = deadLetter(t, c, 1, "malformed: again")[0]
	if m.ID != ack.ID || string(m.Data) != string(body) || m.Headers()["X-Trace"][0] != "abc" {
		t.Fatalf("replayed event %+v headers %v", m, m.Headers())
	}
	if es := deadLetters(t, c); len(es) != 1 || es[0].JobID != ack.ID || es[0].Reason != "malformed: again" {
		t.Fatalf("dead letters %+v", es)
	}
}

func TestReplayAll(t *testing.T) {
	t.Parallel()
	c, _ := dlqSetup(t)
	ctx := context.Background()
	// A key that breaks the rule reaches the stream over plain NATS.
	for _, key := range []string{"k1", "k2", "bad:key", "k3"} {
		if err := c.PublishRaw(contract.EventSubject("order", key), []byte(`{"event":"nope"}`)); err != nil {
			t.Fatal(err)
		}
	}
	deadLetter(t, c, 4, "unknown_event: nope")

	cl := newClient(t, c)
	es, err := cl.DeadLetters(ctx, "order", 2)
	if err != nil || len(es) != 2 || es[0].Key != "k1" || es[1].Key != "k2" || es[0].JobID != "" {
		t.Fatalf("first two: %+v, %v", es, err)
	}
	n, err := cl.ReplayAll(ctx, "order")
	if n != 3 || !errors.Is(err, contract.ErrInvalidKey) {
		t.Fatalf("replayed %d, err %v; want 3 and an invalid key", n, err)
	}
	waitPending(t, c, 3)
	es = deadLetters(t, c)
	if len(es) != 1 || es[0].Key != "bad:key" {
		t.Fatalf("left %+v, want the bad key", es)
	}
	if _, err := cl.Replay(ctx, "order", es[0].Sequence); !errors.Is(err, contract.ErrInvalidKey) {
		t.Fatalf("replay of a bad key: %v", err)
	}
	for _, m := range pullN(t, c, 3) {
		if !strings.HasPrefix(m.ID, "replay.") {
			t.Errorf("replayed id %q", m.ID)
		}
		_ = m.Ack()
	}
}

func TestReplayUnknown(t *testing.T) {
	t.Parallel()
	c, _ := dlqSetup(t)
	ctx := context.Background()
	cl := newClient(t, c)
	if _, err := cl.Replay(ctx, "order", 42); !errors.Is(err, client.ErrNoDeadLetter) {
		t.Fatalf("Replay: %v", err)
	}
	if n, err := cl.ReplayAll(ctx, "order"); n != 0 || err != nil {
		t.Fatalf("ReplayAll of none: %d, %v", n, err)
	}
	if es := deadLetters(t, c); len(es) != 0 {
		t.Fatalf("dead letters %+v", es)
	}
	if _, err := cl.DeadLetters(ctx, "nosuch", 0); !errors.Is(err, client.ErrNotProvisioned) {
		t.Fatalf("unknown workflow: %v", err)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
