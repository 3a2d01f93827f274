package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/tracing"
)

// otlpSpan is a span as an OTLP collector received it.
type otlpSpan struct {
	service           string
	name              string
	trace, id, parent string // hex
	attrs             map[string]string
}

// collector is an OTLP trace receiver on 127.0.0.1, over HTTP
// (/v1/traces, protobuf) and gRPC: what the processes under test export to.
type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []otlpSpan
	got   chan struct{} // a batch came (buffered: 1)
}

func startCollector(t *testing.T) (c *collector, httpURL, grpcURL string) {
	t.Helper()
	c = &collector{got: make(chan struct{}, 1)}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(c.serveHTTP), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(hl) }()
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, c)
	go func() { _ = gs.Serve(gl) }()
	t.Cleanup(func() {
		gs.Stop()
		_ = hs.Close()
	})
	return c, "http://" + hl.Addr().String(), "http://" + gl.Addr().String()
}

func (c *collector) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.Error(w, "want POST /v1/traces", http.StatusNotFound)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.add(&req)
	resp, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(resp)
}

// Export is the gRPC receiver.
func (c *collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.add(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (c *collector) add(req *coltracepb.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := value(rs.GetResource().GetAttributes(), "service.name")
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := otlpSpan{service: service, name: s.GetName(), trace: hex.EncodeToString(s.GetTraceId()),
					id: hex.EncodeToString(s.GetSpanId()), parent: hex.EncodeToString(s.GetParentSpanId()), attrs: map[string]string{}}
				for _, kv := range s.GetAttributes() {
					sp.attrs[kv.GetKey()] = anyString(kv.GetValue())
				}
				c.spans = append(c.spans, sp)
			}
		}
	}
	select {
	case c.got <- struct{}{}:
	default:
	}
}

func value(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return anyString(kv.GetValue())
		}
	}
	return ""
}

func anyString(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	}
	return fmt.Sprint(v.GetValue())
}

// span waits, up to d, for a span named name with the attributes want
// (name=value), exported by service.
func (c *collector) span(t *testing.T, d time.Duration, service, name string, want ...string) otlpSpan {
	t.Helper()
	return c.find(t, d, fmt.Sprintf("span %s of %s with %v", name, service, want), func(s otlpSpan) bool {
		return s.service == service && s.name == name && s.has(want)
	})
}

// find waits, up to d, for a span that match accepts.
func (c *collector) find(t *testing.T, d time.Duration, what string, match func(otlpSpan) bool) otlpSpan {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		c.mu.Lock()
		var seen []string
		for _, s := range c.spans {
			if match(s) {
				c.mu.Unlock()
				return s
			}
			seen = append(seen, fmt.Sprintf("%s %s %v", s.service, s.name, s.attrs))
		}
		c.mu.Unlock()
		select {
		case <-c.got:
		case <-timer.C:
			t.Fatalf("no %s within %s; received:\n  %s", what, d, strings.Join(seen, "\n  "))
		}
	}
}

func (s otlpSpan) has(want []string) bool {
	for _, w := range want {
		k, v, _ := strings.Cut(w, "=")
		if s.attrs[k] != v {
			return false
		}
	}
	return true
}

// under fails unless s is a child of the span (trace, id).
func under(t *testing.T, s otlpSpan, trace, id string) {
	t.Helper()
	if s.trace != trace || s.parent != id {
		t.Errorf("%s %v: trace %s parent %s, want trace %s parent %s", s.name, s.attrs, s.trace, s.parent, trace, id)
	}
}

// TestTracingAcrossProcesses: one trace from a producer's span, in the test
// process, through its publish, to a worker process built from this tree
// that exports over OTLP HTTP (as OTEL_EXPORTER_OTLP_ENDPOINT turns on):
// the event's application and commit, the action, its outcome applied and
// settled, each the child of the one before. Then enqueue, a third
// process exporting over OTLP gRPC, starts a root span whose publish the
// worker continues the same way.
func TestTracingAcrossProcesses(t *testing.T) {
	t.Parallel()
	col, httpURL, grpcURL := startCollector(t)
	p := startBinaryEnv(t, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + httpURL,
		"OTEL_BSP_SCHEDULE_DELAY=100", // export within 100 ms, not 5 s
	}, "--listen", "127.0.0.1:-1", "--http", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-level", "info", "--sim-latency", "5ms")
	p.natsAddr, p.httpAddr = natsAddrOf(t, p.out), httpAddrOf(t, p.out)
	waitHTTP(t, "http://"+p.httpAddr+"/readyz", 200, 30*time.Second)
	if !strings.Contains(p.out.String(), "start-up: tracing on") {
		t.Errorf("the worker does not say it traces:\n%s", p.out.String())
	}

	// The producer: this process, with the SDK's in-memory exporter.
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	cl, err := client.New(natstest.NATS(t, "nats://"+p.natsAddr), client.Config{TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, root := tp.Tracer("test").Start(context.Background(), "producer request")
	_, st, err := cl.PublishAndWait(ctx, "order", "order-1", contract.Envelope{Event: "start_processing"}, client.WithJobID("job-1"))
	root.End()
	if err != nil || !st.Settled || st.To != "processing" {
		t.Fatalf("publish and wait: %+v, %v", st, err)
	}
	var pub tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == tracing.SpanPublish {
			pub = s
		}
	}
	if pub.Parent.SpanID() != root.SpanContext().SpanID() || pub.SpanContext.TraceID() != root.SpanContext().TraceID() {
		t.Fatalf("publish span %+v is not the child of the producer's %s", pub, root.SpanContext().SpanID())
	}
	traceID, pubID := pub.SpanContext.TraceID().String(), pub.SpanContext.SpanID().String()

	const worker, d = "orderly-worker", 20 * time.Second
	apply := col.span(t, d, worker, tracing.SpanApply, "orderly.job_id=job-1", "orderly.event=start_processing",
		"orderly.from=idle", "orderly.to=processing", "orderly.workflow=order", "orderly.key=order-1", "orderly.settled=false")
	under(t, apply, traceID, pubID)
	under(t, col.span(t, d, worker, tracing.SpanCommit, "orderly.batch=1"), traceID, apply.id)
	action := col.span(t, d, worker, tracing.SpanAction, "orderly.action=fetch_order", "orderly.attempt=1", "orderly.job_id=job-1")
	under(t, action, traceID, apply.id)
	outcome := col.span(t, d, worker, tracing.SpanApply, "orderly.event=order_fetched", "orderly.settled=true",
		"orderly.to=processing", "orderly.job_id=job-1")
	under(t, outcome, traceID, action.id)
	col.find(t, d, "a commit span under the outcome's", func(s otlpSpan) bool {
		return s.name == tracing.SpanCommit && s.trace == traceID && s.parent == outcome.id
	})

	// enqueue: a root span of its own, exported over gRPC.
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "enqueue"), "order-2", "start_processing", "--wait", "--id", "job-2", "--nats-url", "nats://"+p.natsAddr)
	cmd.Env = []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + grpcURL, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("enqueue: %v\n%s", err, out.String())
	}
	const enq = "orderly-enqueue"
	cmdSpan := col.span(t, d, enq, "enqueue publish", "orderly.key=order-2")
	if cmdSpan.parent != "" {
		t.Errorf("enqueue's span has parent %s, want a root", cmdSpan.parent)
	}
	epub := col.span(t, d, enq, tracing.SpanPublish, "orderly.job_id=job-2")
	under(t, epub, cmdSpan.trace, cmdSpan.id)
	under(t, col.span(t, d, worker, tracing.SpanApply, "orderly.job_id=job-2", "orderly.event=start_processing"), cmdSpan.trace, epub.id)
}
