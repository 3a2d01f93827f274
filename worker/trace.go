package worker

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/tracing"
)

// Tracing (Config.TracerProvider): each event pulled gets a span,
// tracing.SpanApply, that continues the trace its headers carry, from its
// claim to its status; its commit is a child span, the actions its
// transition starts are children too (one span per attempt, in the
// action's context), and an action's outcome is applied in a span that is
// the attempt's child. The timers a commit arms and an event's dead letter
// carry the trace on in their headers; a pending action keeps it in the
// key's state, so that a worker that resumes the action continues it.
// Without a TracerProvider none of this runs: the worker's tracer is nil,
// and every step below starts with that check.

func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(tracing.Scope)
}

// eventSpans starts the spans of the events and outcomes a batch takes; an
// event deferred from an earlier batch has its span already.
func (a *actor) eventSpans(ctx context.Context, internal []internalEvent, msgs []*queue.Msg) {
	f := a.f
	for i := range internal {
		ev := &internal[i]
		if ev.retry != nil || ev.span != nil {
			continue // a retry note: the attempt's span told of it
		}
		_, ev.span = f.w.tracer.Start(trace.ContextWithSpanContext(ctx, ev.parent), tracing.SpanApply,
			trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithAttributes(tracing.Workflow.String(f.name), tracing.Key.String(a.key), tracing.Pending.String(ev.pendingID)))
	}
	for _, m := range msgs {
		if m.Span != nil {
			continue
		}
		parent := tracing.Extract(ctx, m.Headers())
		opts := []trace.SpanStartOption{
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(tracing.NATS, tracing.MessagingDestination.String(m.Subject()),
				tracing.Workflow.String(f.name), tracing.Key.String(a.key),
				tracing.Partition.Int(m.Partition), tracing.Sequence.Int64(int64(m.Sequence)),
				tracing.Attempt.Int64(int64(m.Delivered))),
		}
		if m.ID != "" { // a timer has none
			opts = append(opts, trace.WithAttributes(tracing.JobID.String(m.ID)))
		}
		if kind, _, ok := m.Timer(); ok {
			if _, periodic := contract.EverySlot(kind); periodic {
				// A tick of a periodic event fires again and again: each
				// in a trace of its own, linked to the transition that
				// armed it, not all in that one.
				opts = append(opts, trace.WithNewRoot(), trace.WithLinks(trace.LinkFromContext(parent)))
			}
		}
		_, m.Span = f.w.tracer.Start(parent, tracing.SpanApply, opts...)
	}
}

// endSpans ends the spans of what a batch handled: every outcome, and the
// events but those deferred (leftover), which keep theirs for the batch
// that takes them.
func endSpans(internal []internalEvent, msgs, leftover []*queue.Msg) {
	for _, ev := range internal {
		if ev.span != nil {
			ev.span.End()
		}
	}
	for _, m := range msgs[:len(msgs)-len(leftover)] {
		if m.Span != nil {
			m.Span.End()
		}
	}
}

// commitSpans starts a commit span under each span of the events and
// outcomes that b commits (one state write commits them all).
func (a *actor) commitSpans(ctx context.Context, b *batch, internal []internalEvent, msgs []*queue.Msg) []trace.Span {
	tr := a.f.w.tracer
	if tr == nil {
		return nil
	}
	var spans []trace.Span
	handled := msgs[:len(msgs)-len(b.leftover)]
	n := tracing.Batch.Int(len(internal) + len(handled))
	start := func(parent trace.Span) {
		_, s := tr.Start(trace.ContextWithSpan(ctx, parent), tracing.SpanCommit, trace.WithAttributes(n))
		spans = append(spans, s)
	}
	for _, ev := range internal {
		if ev.span != nil {
			start(ev.span)
		}
	}
	for _, m := range handled {
		if m.Span != nil {
			start(m.Span)
		}
	}
	return spans
}

// traceCtx is ctx with the span of the transition that armed b's timers or
// started its actions, which its timers carry on.
func (b *batch) traceCtx(ctx context.Context) context.Context {
	if b.lead == nil {
		return ctx
	}
	return trace.ContextWithSpan(ctx, b.lead)
}

// endCommit ends the commit spans with the commit's result.
func endCommit(spans []trace.Span, rev uint64, err error) {
	for _, s := range spans {
		if err != nil {
			tracing.Fail(s, err)
		} else {
			s.SetAttributes(tracing.Revision.Int64(int64(rev)))
		}
		s.End()
	}
}

// actionSpan starts the span of an attempt of j's action, in the trace of
// the transition that started it, and returns ctx carrying it: the action's
// own calls (an HTTP client with OpenTelemetry's instrumentation) join the
// trace.
func (p *actionPool) actionSpan(ctx context.Context, j *job) (context.Context, trace.Span) {
	parent := tracing.FromParent(ctx, j.p.TraceParent, j.p.TraceState)
	return p.w.tracer.Start(parent, tracing.SpanAction, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(tracing.Workflow.String(j.f.name), tracing.Key.String(j.key),
			tracing.Action.String(j.p.Action), tracing.JobID.String(j.p.JobID),
			tracing.Pending.String(j.p.ID), tracing.Attempt.Int(j.attempt),
			tracing.From.String(j.state), tracing.Version.Int64(int64(j.version))))
}

// deadLetterSpan starts the span of m's dead-lettering: a child of m's span
// if it has one, else of the trace m's headers carry.
func (f *flow) deadLetterSpan(ctx context.Context, m *queue.Msg, reason string) (context.Context, trace.Span) {
	parent := ctx
	if m.Span != nil {
		parent = trace.ContextWithSpan(ctx, m.Span)
	} else {
		parent = tracing.Extract(ctx, m.Headers())
	}
	ctx, span := f.w.tracer.Start(parent, tracing.SpanDeadLetter, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(tracing.NATS, tracing.MessagingDestination.String(contract.DeadLetterSubject(f.name, m.Key)),
			tracing.Workflow.String(f.name), tracing.Key.String(m.Key), tracing.JobID.String(m.ID),
			tracing.ErrorCode.String(reasonCode(reason)), tracing.Reason.String(reason),
			tracing.Attempt.Int64(int64(m.Delivered))))
	return ctx, span
}
