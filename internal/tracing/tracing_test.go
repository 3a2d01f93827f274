package tracing

import (
	"context"
	"slices"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/contract"
)

// TestTracingHeaders: the contract's header names are the W3C propagator's,
// and a span context goes into headers and comes out the same, through a
// message's headers and through PendingWork's two strings.
func TestTracingHeaders(t *testing.T) {
	if got, want := (propagation.TraceContext{}).Fields(), []string{contract.HeaderTraceParent, contract.HeaderTraceState}; !slices.Equal(got, want) {
		t.Fatalf("the W3C propagator writes %v, the contract names %v", got, want)
	}
	ts, err := trace.ParseTraceState("congo=t61rcWkgMzE")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled, TraceState: ts,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)

	h := map[string][]string{"Nats-Msg-Id": {"j"}}
	Inject(context.Background(), h)
	if len(h) != 1 {
		t.Fatalf("a context without a span wrote %v", h)
	}
	// A copy's stale trace context (a dead letter's, say) is replaced whole.
	h[contract.HeaderTraceParent] = []string{"00-00000000000000000000000000000001-0000000000000001-01"}
	h[contract.HeaderTraceState] = []string{"stale=1"}
	Inject(ctx, h)
	if got := h[contract.HeaderTraceParent]; len(got) != 1 || got[0] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Errorf("traceparent %v", got)
	}
	if got := h[contract.HeaderTraceState]; len(got) != 1 || got[0] != "congo=t61rcWkgMzE" {
		t.Errorf("tracestate %v", got)
	}
	back := trace.SpanContextFromContext(Extract(context.Background(), h))
	if !back.Equal(sc.WithRemote(true)) {
		t.Errorf("extracted %+v, want %+v", back, sc)
	}

	parent, state := Parent(sc)
	if back := trace.SpanContextFromContext(FromParent(context.Background(), parent, state)); !back.Equal(sc.WithRemote(true)) {
		t.Errorf("from %q %q: %+v, want %+v", parent, state, back, sc)
	}
	if p, s := Parent(trace.SpanContext{}); p != "" || s != "" {
		t.Errorf("no span context: %q %q", p, s)
	}
	for _, bad := range []map[string][]string{nil, {}, {contract.HeaderTraceParent: {"garbage"}}, {contract.HeaderTraceParent: {}}} {
		if sc := trace.SpanContextFromContext(Extract(context.Background(), bad)); sc.IsValid() {
			t.Errorf("%v gave %+v", bad, sc)
		}
	}
	if sc := trace.SpanContextFromContext(FromParent(context.Background(), "garbage", "")); sc.IsValid() {
		t.Errorf("garbage gave %+v", sc)
	}
}
