// Package tracing is what the library packages (client, worker and the
// JetStream adapter) share to trace an event's path with OpenTelemetry: W3C
// trace context in message headers (contract.HeaderTraceParent,
// contract.HeaderTraceState), the names of the spans and of their
// attributes. It depends on the OpenTelemetry API only; the SDK and its
// exporters are the binaries' (internal/telemetry), so a library user who
// does not trace pays for nothing but a nil check.
package tracing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/contract"
)

// Scope is the instrumentation scope of Orderly's tracers.
const Scope = "github.com/orderly-dev/orderly"

// Span names: one per step of an event's path (docs/operations.md,
// Tracing, lists them with their attributes).
const (
	// SpanPublish is a producer's publish of an event (the client).
	SpanPublish = "orderly.publish"
	// SpanApply is the worker's handling of one event or action outcome:
	// its claim, its transition, the commit, the acknowledgement and its
	// status.
	SpanApply = "orderly.apply"
	// SpanCommit is the state write (with the timers it arms) that commits
	// an applied event, a child of its SpanApply.
	SpanCommit = "orderly.commit"
	// SpanAction is one attempt of an action (slow work), a child of the
	// SpanApply whose transition started it; the action's context carries
	// it.
	SpanAction = "orderly.action"
	// SpanDeadLetter is the copy of an event to the dead letters.
	SpanDeadLetter = "orderly.dead_letter"
)

// Attribute keys. Never the event's data.
const (
	Workflow  = attribute.Key("orderly.workflow")
	Key       = attribute.Key("orderly.key")
	Event     = attribute.Key("orderly.event")
	JobID     = attribute.Key("orderly.job_id")
	From      = attribute.Key("orderly.from")
	To        = attribute.Key("orderly.to")
	Version   = attribute.Key("orderly.version")
	Settled   = attribute.Key("orderly.settled")
	ErrorCode = attribute.Key("orderly.error_code")
	Attempt   = attribute.Key("orderly.attempt")
	Action    = attribute.Key("orderly.action")
	Pending   = attribute.Key("orderly.pending_id")
	Partition = attribute.Key("orderly.partition")
	Sequence  = attribute.Key("orderly.sequence")
	Batch     = attribute.Key("orderly.batch")
	Revision  = attribute.Key("orderly.revision")
	Reason    = attribute.Key("orderly.reason")
	Outcome   = attribute.Key("orderly.outcome")
	Duplicate = attribute.Key("orderly.duplicate")
	Due       = attribute.Key("orderly.due")

	// MessagingSystem and MessagingDestination are OpenTelemetry's
	// messaging conventions.
	MessagingSystem      = attribute.Key("messaging.system")
	MessagingDestination = attribute.Key("messaging.destination.name")
)

// NATS is the messaging.system attribute of Orderly's spans.
var NATS = MessagingSystem.String("nats")

// w3c is the one format of the headers: the W3C's, whatever propagator a
// process has set globally.
var w3c propagation.TraceContext

// carrier reads and writes message headers (nats.Header's type) under
// their exact names: NATS headers are case-sensitive.
type carrier map[string][]string

func (c carrier) Get(k string) string {
	if v := c[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c carrier) Set(k, v string) { c[k] = []string{v} }

func (c carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the span context of ctx to h, replacing any trace context h
// held; it leaves h alone when ctx carries none. h must not be nil.
func Inject(ctx context.Context, h map[string][]string) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	delete(h, contract.HeaderTraceParent)
	delete(h, contract.HeaderTraceState)
	w3c.Inject(ctx, carrier(h))
}

// Extract returns ctx with the remote span context that h carries, or ctx
// as it is when h carries none (or a malformed one).
func Extract(ctx context.Context, h map[string][]string) context.Context {
	if len(h[contract.HeaderTraceParent]) == 0 {
		return ctx
	}
	return w3c.Extract(ctx, carrier(h))
}

// Parent returns the header values of sc: what PendingWork keeps.
func Parent(sc trace.SpanContext) (traceparent, tracestate string) {
	if !sc.IsValid() {
		return "", ""
	}
	h := carrier{}
	w3c.Inject(trace.ContextWithSpanContext(context.Background(), sc), h)
	return h.Get(contract.HeaderTraceParent), h.Get(contract.HeaderTraceState)
}

// FromParent returns ctx with the remote span context of the header values
// traceparent and tracestate (as Parent returns them), or ctx as it is when
// traceparent is empty or malformed.
func FromParent(ctx context.Context, traceparent, tracestate string) context.Context {
	if traceparent == "" {
		return ctx
	}
	h := carrier{contract.HeaderTraceParent: {traceparent}}
	if tracestate != "" {
		h[contract.HeaderTraceState] = []string{tracestate}
	}
	return w3c.Extract(ctx, h)
}

// Fail marks span as failed with err.
func Fail(span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// Status sets the attributes of a status on span: the transition, or the
// rejection (which also fails the span, so that a search for errors finds
// it).
func Status(span trace.Span, st *contract.Status) {
	span.SetAttributes(
		Event.String(st.Event), JobID.String(st.JobID),
		From.String(st.From), To.String(st.To),
		Version.Int64(int64(st.Version)), Settled.Bool(st.Settled),
	)
	if st.Error != nil {
		span.SetAttributes(ErrorCode.String(st.Error.Code))
		span.SetStatus(codes.Error, st.Error.Code+": "+st.Error.Message)
	}
}
