package queue_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
)

// Resources provisioned by an older version (consumers that stop delivering
// after 10 deliveries, a dead-letter stream without a byte limit that drops
// its oldest entries) are brought up to date by the next Provision.
func TestProvisionUpdatesDeliveryAndSizeLimits(t *testing.T) {
	t.Parallel()
	c, js := dlqSetup(t)
	ctx := context.Background()
	cons, err := js.Consumer(ctx, "ORDERLY_EVENTS_ORDER", "orderly_order_p0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	if cfg.MaxDeliver != -1 {
		t.Fatalf("new consumer's MaxDeliver %d, want -1 (unlimited)", cfg.MaxDeliver)
	}
	cfg.MaxDeliver = 10
	if _, err := js.UpdateConsumer(ctx, "ORDERLY_EVENTS_ORDER", cfg); err != nil {
		t.Fatal(err)
	}
	dlq, err := js.Stream(ctx, "ORDERLY_DLQ_ORDER")
	if err != nil {
		t.Fatal(err)
	}
	scfg := dlq.CachedInfo().Config
	if scfg.Discard != jetstream.DiscardNew || scfg.MaxBytes != 256<<20 || scfg.MaxMsgSize != 2*(64<<10)+8<<10 {
		t.Fatalf("new dead-letter stream: discard %v, max bytes %d, max message %d", scfg.Discard, scfg.MaxBytes, scfg.MaxMsgSize)
	}
	scfg.Discard, scfg.MaxBytes, scfg.MaxMsgSize = jetstream.DiscardOld, -1, -1
	if _, err := js.UpdateStream(ctx, scfg); err != nil {
		t.Fatal(err)
	}
	p, err := c.Provision(ctx, queue.Spec{Workflow: "order", DeadLetterMaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"consumer orderly_order_p0", "stream ORDERLY_DLQ_ORDER"} {
		if !slices.Contains(p.Updated, want) {
			t.Errorf("updated %v, want %s among them", p.Updated, want)
		}
	}
	info, err := cons.Info(ctx)
	if err != nil || info.Config.MaxDeliver != -1 {
		t.Fatalf("consumer's MaxDeliver %d (%v) after provisioning, want -1", info.Config.MaxDeliver, err)
	}
	sinfo, err := dlq.Info(ctx)
	if err != nil || sinfo.Config.Discard != jetstream.DiscardNew || sinfo.Config.MaxBytes != 1<<20 {
		t.Fatalf("dead-letter stream after provisioning: %+v (%v)", sinfo.Config, err)
	}
	tinfo, err := js.Stream(ctx, "ORDERLY_TIMERS_ORDER")
	if err != nil || tinfo.CachedInfo().Config.MaxMsgSize != 64<<10 {
		t.Fatalf("timers stream: %v", err)
	}
	if again, err := c.Provision(ctx, queue.Spec{Workflow: "order", DeadLetterMaxBytes: 1 << 20}); err != nil || again.Changed() {
		t.Fatalf("provisioning again changed %v %v (%v)", again.Created, again.Updated, err)
	}
}

// A full dead-letter stream refuses the new dead letter with
// ErrDeadLettersFull and keeps every old one: the caller keeps the event.
func TestDeadLettersFullRefusesAndKeepsTheOld(t *testing.T) {
	t.Parallel()
	c, _ := dlqSetup(t)
	ctx := context.Background()
	if _, err := c.Provision(ctx, queue.Spec{Workflow: "order", Partitions: 1, DeadLetterMaxBytes: 8 << 10}); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 1000)
	for i := range body {
		body[i] = 'x'
	}
	for range 20 {
		if err := c.PublishRaw(contract.EventSubject("order", "k"), body); err != nil {
			t.Fatal(err)
		}
	}
	stored := 0
	var refused error
	for _, m := range pullN(t, c, 20) {
		if refused != nil {
			_ = m.Nak(0)
			continue
		}
		if refused = c.DeadLetter(ctx, "order", m, "malformed: test"); refused == nil {
			stored++
			_ = m.Term(contract.CodeMalformed)
		} else {
			_ = m.Nak(0)
		}
	}
	if !errors.Is(refused, queue.ErrDeadLettersFull) || stored == 0 {
		t.Fatalf("after %d dead letters: %v, want ErrDeadLettersFull", stored, refused)
	}
	if es := deadLetters(t, c); len(es) != stored || es[0].Sequence != 1 {
		t.Fatalf("%d dead letters kept (first %d), want all %d from the first", len(es), es[0].Sequence, stored)
	}
}
