package client_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/tracing"
)

// TestTracingCallerContext: a client with no TracerProvider of its own
// still puts its caller's span into the event's trace headers: from
// Publish's context, and from WithTraceContext for PublishAsync. A caller
// with no span adds none.
func TestTracingCallerContext(t *testing.T) {
	t.Parallel()
	b := setup(t, queue.Spec{})
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:  trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	js, err := jetstream.New(natstest.NATS(t, b.url))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), contract.EventsStream("order"))
	if err != nil {
		t.Fatal(err)
	}
	carried := func(seq uint64) trace.SpanContext {
		t.Helper()
		m, err := stream.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		return trace.SpanContextFromContext(tracing.Extract(context.Background(), m.Header))
	}
	ev := contract.Envelope{Event: "start_processing"}

	ack, err := b.client.Publish(ctx, "order", "k1", ev)
	if err != nil {
		t.Fatal(err)
	}
	if got := carried(ack.Sequence); !got.Equal(sc.WithRemote(true)) {
		t.Errorf("Publish: the event carries %+v, want the caller's %+v", got, sc)
	}
	p, err := b.client.PublishAsync("order", "k2", ev, client.WithTraceContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if ack, err = p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := carried(ack.Sequence); !got.Equal(sc.WithRemote(true)) {
		t.Errorf("PublishAsync: the event carries %+v, want the caller's %+v", got, sc)
	}
	ack, err = b.client.Publish(context.Background(), "order", "k3", ev)
	if err != nil {
		t.Fatal(err)
	}
	if got := carried(ack.Sequence); got.IsValid() {
		t.Errorf("a caller without a span: the event carries %+v", got)
	}
}
