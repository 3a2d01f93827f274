package worker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/tracing"
	"github.com/orderly-dev/orderly/worker"
)

// traces is an SDK tracer provider whose spans go, as each ends, to the
// SDK's in-memory exporter.
type traces struct {
	tp  *sdktrace.TracerProvider
	exp *tracetest.InMemoryExporter
}

func newTraces(t *testing.T) traces {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return traces{tp: tp, exp: exp}
}

// client is a producer on a connection of its own that traces with tr.
func (tr traces) client(t *testing.T, url string) *client.Client {
	t.Helper()
	cl, err := client.New(natstest.NATS(t, url), client.Config{TracerProvider: tr.tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// root starts the test's own span, the producer's caller.
func (tr traces) root(t *testing.T) (context.Context, trace.Span) {
	t.Helper()
	ctx, span := tr.tp.Tracer("test").Start(context.Background(), "test")
	t.Cleanup(func() { span.End() })
	return ctx, span
}

// span waits, up to d, for an ended span named name whose attributes
// include want, and returns it. Spans end after the statuses they announce
// are published, so a test that saw a status may still wait a little.
func (tr traces) span(t *testing.T, d time.Duration, name string, want ...attribute.KeyValue) tracetest.SpanStub {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		spans := tr.exp.GetSpans()
		for _, s := range spans {
			if s.Name == name && hasAttrs(s, want) {
				return s
			}
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, s := range spans {
				seen = append(seen, s.Name+" "+fmt.Sprint(s.Attributes))
			}
			t.Fatalf("no span %s with %v within %s; ended spans:\n  %s", name, want, d, strings.Join(seen, "\n  "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func hasAttrs(s tracetest.SpanStub, want []attribute.KeyValue) bool {
	for _, w := range want {
		found := false
		for _, a := range s.Attributes {
			if a.Key == w.Key && a.Value == w.Value {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// childOf fails unless child's parent is parent, in parent's trace.
func childOf(t *testing.T, child tracetest.SpanStub, parent trace.SpanContext) {
	t.Helper()
	if child.SpanContext.TraceID() != parent.TraceID() || child.Parent.SpanID() != parent.SpanID() {
		t.Errorf("%s %v: trace %s parent %s, want trace %s parent %s", child.Name, child.Attributes,
			child.SpanContext.TraceID(), child.Parent.SpanID(), parent.TraceID(), parent.SpanID())
	}
}

// TestTracingThroughTheWorker: one trace from the producer's span through
// the publish, the event's application and commit, the action (whose
// context carries its span) and the outcome's application, settled.
func TestTracingThroughTheWorker(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tr := newTraces(t)
	inAction := make(chan trace.SpanContext, 4)
	release := make(chan struct{})
	startWorker(t, b.url, worker.Config{TracerProvider: tr.tp}, func(ctx context.Context, c worker.ActionCall[tally]) (any, error) {
		inAction <- trace.SpanContextFromContext(ctx)
		select {
		case <-release:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	ctx, root := tr.root(t)
	type result struct {
		st  contract.Status
		err error
	}
	done := make(chan result, 1)
	cl := tr.client(t, b.url)
	go func() {
		_, st, err := cl.PublishAndWait(ctx, "tally", "k", contract.Envelope{Event: "work"}, client.WithJobID("job-1"))
		done <- result{st, err}
	}()
	actionCtx := natstest.Recv(t, inAction, natstest.Timeout, "the action's call")

	// While the action runs, the key's state keeps its trace context: a
	// worker that resumes it after a crash continues the trace.
	const d = 10 * time.Second
	apply := tr.span(t, d, tracing.SpanApply, tracing.Event.String("work"), tracing.JobID.String("job-1"),
		tracing.Workflow.String("tally"), tracing.Key.String("k"), tracing.From.String("open"), tracing.To.String("open"),
		tracing.Settled.Bool(false), tracing.Attempt.Int64(1))
	rec, _ := readTally(t, b.client, "k")
	if len(rec.Pending) != 1 {
		t.Fatalf("pending %+v, want the action", rec.Pending)
	}
	kept := trace.SpanContextFromContext(tracing.FromParent(context.Background(), rec.Pending[0].TraceParent, rec.Pending[0].TraceState))
	if kept.TraceID() != apply.SpanContext.TraceID() || kept.SpanID() != apply.SpanContext.SpanID() {
		t.Errorf("the pending action keeps trace context %q, want the span of its transition %s", rec.Pending[0].TraceParent, apply.SpanContext.SpanID())
	}
	close(release)
	res := natstest.Recv(t, done, natstest.Timeout, "the job's end")
	if res.err != nil || !res.st.Settled || res.st.Event != "worked" {
		t.Fatalf("publish and wait: %+v, %v", res.st, res.err)
	}

	pub := tr.span(t, d, tracing.SpanPublish, tracing.JobID.String("job-1"))
	childOf(t, pub, root.SpanContext())
	if pub.SpanKind != trace.SpanKindProducer {
		t.Errorf("publish span kind %s", pub.SpanKind)
	}
	childOf(t, apply, pub.SpanContext)
	childOf(t, tr.span(t, d, tracing.SpanCommit, tracing.Batch.Int(1)), apply.SpanContext)
	action := tr.span(t, d, tracing.SpanAction, tracing.Action.String("slow"), tracing.Attempt.Int(1), tracing.JobID.String("job-1"))
	childOf(t, action, apply.SpanContext)
	if actionCtx.SpanID() != action.SpanContext.SpanID() {
		t.Errorf("the action's context carries span %s, not its span %s", actionCtx.SpanID(), action.SpanContext.SpanID())
	}
	outcome := tr.span(t, d, tracing.SpanApply, tracing.Event.String("worked"), tracing.Settled.Bool(true), tracing.Action.String("slow"))
	childOf(t, outcome, action.SpanContext)
	for _, s := range tr.exp.GetSpans() {
		for _, a := range s.Attributes {
			if strings.Contains(a.Value.Emit(), `"n"`) {
				t.Errorf("span %s carries the event's data: %s=%s", s.Name, a.Key, a.Value.Emit())
			}
		}
	}
}

// TestTracingDeadLetters: an event's dead letter carries its trace on: the
// span of the dead-lettering's, under the event's, when the worker traces;
// the producer's, as the event had it, when it does not.
func TestTracingDeadLetters(t *testing.T) {
	t.Parallel()
	for _, traced := range []bool{true, false} {
		t.Run(fmt.Sprintf("worker traces %v", traced), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			tr := newTraces(t)
			var cfg worker.Config
			if traced {
				cfg.TracerProvider = tr.tp
			}
			startWorker(t, b.url, cfg, nil)
			ctx, _ := tr.root(t)
			// No version of the workflow knows the event: a dead letter.
			if _, err := tr.client(t, b.url).Publish(ctx, "tally", "k", contract.Envelope{Event: "nope"}, client.WithJobID("dead-1")); err != nil {
				t.Fatal(err)
			}
			var dl client.DeadLetter
			waitFor(t, 10*time.Second, "the dead letter", func() bool {
				dls, err := b.client.DeadLetters(context.Background(), "tally", 0)
				if err != nil || len(dls) == 0 {
					return false
				}
				dl = dls[0]
				return true
			})
			carried := tracing.Extract(context.Background(), dl.Headers)
			sc := trace.SpanContextFromContext(carried)
			if !sc.IsValid() {
				t.Fatalf("the dead letter carries no trace context: %v", dl.Headers)
			}
			pub := tr.span(t, 10*time.Second, tracing.SpanPublish, tracing.JobID.String("dead-1"))
			if !traced {
				if sc.TraceID() != pub.SpanContext.TraceID() || sc.SpanID() != pub.SpanContext.SpanID() {
					t.Errorf("dead letter's trace context %s/%s, want the event's %s/%s", sc.TraceID(), sc.SpanID(),
						pub.SpanContext.TraceID(), pub.SpanContext.SpanID())
				}
				return
			}
			apply := tr.span(t, 10*time.Second, tracing.SpanApply, tracing.JobID.String("dead-1"), tracing.ErrorCode.String(contract.CodeUnknownEvent))
			childOf(t, apply, pub.SpanContext)
			dead := tr.span(t, 10*time.Second, tracing.SpanDeadLetter, tracing.JobID.String("dead-1"), tracing.ErrorCode.String(contract.CodeUnknownEvent))
			childOf(t, dead, apply.SpanContext)
			if sc.TraceID() != dead.SpanContext.TraceID() || sc.SpanID() != dead.SpanContext.SpanID() {
				t.Errorf("dead letter's trace context %s/%s, want its dead-lettering's span %s/%s", sc.TraceID(), sc.SpanID(),
					dead.SpanContext.TraceID(), dead.SpanContext.SpanID())
			}
		})
	}
}

// TestTracingDelayedEvents: a delayed event, stored as a schedule and
// delivered by the server later, is applied in its producer's trace; and a
// state timeout, a timer the worker arms, fires in the trace of the
// transition that armed it.
func TestTracingDelayedEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tr := newTraces(t)
	startWorker(t, b.url, worker.Config{TracerProvider: tr.tp}, nil)
	cl := tr.client(t, b.url)
	ctx, _ := tr.root(t)
	if _, err := cl.Publish(ctx, "tally", "k", add(1), client.WithDelay(time.Second), client.WithJobID("later-1")); err != nil {
		t.Fatal(err)
	}
	pub := tr.span(t, 10*time.Second, tracing.SpanPublish, tracing.JobID.String("later-1"))
	if !hasAttrs(pub, []attribute.KeyValue{tracing.Event.String("add")}) {
		t.Errorf("publish span %v", pub.Attributes)
	}
	childOf(t, tr.span(t, 15*time.Second, tracing.SpanApply, tracing.JobID.String("later-1"), tracing.Event.String("add")), pub.SpanContext)

	// wait: open -> waiting, whose timeout fires "expired" a second later.
	if _, err := cl.Publish(ctx, "tally", "t", contract.Envelope{Event: "wait"}, client.WithJobID("wait-1")); err != nil {
		t.Fatal(err)
	}
	armed := tr.span(t, 10*time.Second, tracing.SpanApply, tracing.JobID.String("wait-1"), tracing.To.String("waiting"))
	fired := tr.span(t, 15*time.Second, tracing.SpanApply, tracing.Key.String("t"), tracing.Event.String("expired"), tracing.To.String("closed"))
	childOf(t, fired, armed.SpanContext)
}
