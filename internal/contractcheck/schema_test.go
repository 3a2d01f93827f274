package contractcheck_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/worker"
)

// The JSON Schemas in docs/schemas are what producers in other languages
// read: these tests hold them to what a running worker really writes, and to
// the rules package contract enforces.

const schemaDir = "../../docs/schemas"

// compileSchema compiles docs/schemas/<file>, with "format" asserted (a
// date-time must be one), optionally at a fragment (#/$defs/key).
func compileSchema(t *testing.T, file, fragment string) *jsonschema.Schema {
	t.Helper()
	path, err := filepath.Abs(filepath.Join(schemaDir, file))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	s, err := c.Compile(path + fragment)
	if err != nil {
		t.Fatalf("compile %s%s: %v", file, fragment, err)
	}
	return s
}

// validate reports whether doc, JSON, is valid against s, and why not.
func validate(s *jsonschema.Schema, doc []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return err
	}
	return s.Validate(v)
}

// gateway is the order workflow's payment gateway for the test: the first
// authorization fails (the worker retries it), the second waits until the
// test releases it, so that the key's state can be read with work pending.
type gateway struct {
	release     chan struct{}
	authorizing chan struct{}
	mu          sync.Mutex
	calls       int
}

func (g *gateway) FetchOrder(_ context.Context, id, _ string) (order.Details, error) {
	return order.Details{ID: id, AmountCents: 1250, Currency: "EUR", Items: 2}, nil
}

func (g *gateway) Authorize(ctx context.Context, _ order.Details, _ string) (string, error) {
	g.mu.Lock()
	g.calls++
	n := g.calls
	g.mu.Unlock()
	if n == 1 {
		return "", errors.New("gateway busy")
	}
	if n == 2 {
		close(g.authorizing)
	}
	select {
	case <-g.release:
		return "pay_1", nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (g *gateway) Capture(context.Context, string, string) error { return nil }

// startOrder runs the order workflow on a real worker and server, its
// gateway held by gw (release it to let authorizations through).
func startOrder(t *testing.T) (*embedded.Server, *gateway) {
	t.Helper()
	srv := natstest.Server(t)
	gw := &gateway{release: make(chan struct{}), authorizing: make(chan struct{})}
	wf, err := order.NewWorkflow(order.Config{}, gw)
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(natstest.NATS(t, srv.ClientURL()), worker.Config{RetryBackoff: 20 * time.Millisecond}, wf)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return srv, gw
}

// TestWireContractSchemasValidateRealMessages runs the reference order
// workflow on a real worker and server, publishes events as a producer in
// another language would (plain NATS, a Nats-Msg-Id header), and validates
// against the schemas every status it publishes, the key's state record as
// stored (with slow work pending, and after), and the event bodies as the
// events stream stores them.
func TestWireContractSchemasValidateRealMessages(t *testing.T) {
	t.Parallel()
	eventSchema := compileSchema(t, "event.schema.json", "")
	statusSchema := compileSchema(t, "status.schema.json", "")
	stateSchema := compileSchema(t, "state.schema.json", "")

	srv, gw := startOrder(t)
	released := false
	defer func() {
		if !released {
			close(gw.release)
		}
	}()

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	raw := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(contract.StatusSubject(order.Workflow, ""), raw)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var seen []contract.Status
	// next validates every status as it arrives and returns the first that
	// matches want.
	next := func(what string, want func(contract.Status) bool) contract.Status {
		t.Helper()
		for {
			select {
			case m := <-raw:
				if err := validate(statusSchema, m.Data); err != nil {
					t.Fatalf("status %s does not validate: %v", m.Data, err)
				}
				st, err := contract.DecodeStatus(m.Data)
				if err != nil {
					t.Fatal(err)
				}
				seen = append(seen, st)
				if want(st) {
					return st
				}
			case <-ctx.Done():
				t.Fatalf("no status %s; saw %+v", what, seen)
			}
		}
	}
	publish := func(key, jobID, body string) uint64 {
		t.Helper()
		m := nats.NewMsg(contract.EventSubject(order.Workflow, key))
		m.Header.Set(contract.HeaderJobID, jobID)
		m.Data = []byte(body)
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("publish %s: %v", body, err)
		}
		return ack.Sequence
	}
	job := func(id string, settled bool) func(contract.Status) bool {
		return func(st contract.Status) bool { return st.JobID == id && st.Settled == settled }
	}

	publish("order-42", "job-1", `{"event":"start_processing"}`)
	next("of job-1 settled", job("job-1", true))
	publish("order-42", "job-2", `{"event":"confirm_payment","data":{"note":"too early"}}`)
	if st := next("of job-2", job("job-2", true)); st.Error == nil || st.Error.Code != contract.CodeInvalidTransition {
		t.Fatalf("job-2: %+v, want %s", st, contract.CodeInvalidTransition)
	}
	publish("order-42", "job-3", `{"event":"request_payment"}`)
	next("of job-3 retrying", func(st contract.Status) bool {
		return st.JobID == "job-3" && st.Error != nil && st.Error.Code == contract.CodeRetrying && st.Attempt == 1
	})
	publish("order-43", "job-4", `{"event":"start_processing","priority":"high"}`)
	if st := next("of job-4", job("job-4", true)); st.Error == nil || st.Error.Code != contract.CodeMalformed {
		t.Fatalf("job-4: %+v, want %s", st, contract.CodeMalformed)
	}

	// The state record while the authorization's second attempt runs: work
	// pending, with the failed attempt's error and the next one's time.
	kv, err := js.KeyValue(ctx, contract.StateBucket(order.Workflow))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-gw.authorizing:
	case <-ctx.Done():
		t.Fatal("the second authorization never started")
	}
	watch, err := kv.Watch(ctx, "order-42")
	if err != nil {
		t.Fatal(err)
	}
	var pending []byte
	for pending == nil {
		select {
		case e := <-watch.Updates():
			if e == nil {
				continue // the end of the initial values
			}
			rec, err := contract.DecodeState(e.Value())
			if err != nil {
				t.Fatal(err)
			}
			if len(rec.Pending) == 1 && rec.Pending[0].Attempt == 2 && rec.Pending[0].LastError != "" {
				pending = e.Value()
			}
		case <-ctx.Done():
			t.Fatal("no state record with the second attempt pending")
		}
	}
	_ = watch.Stop()
	if err := validate(stateSchema, pending); err != nil {
		t.Fatalf("state %s does not validate: %v", pending, err)
	}
	for _, field := range []string{`"pending":[`, `"last_error":`, `"next_attempt_at":`, `"since":`, `"applied":[`} {
		if !bytes.Contains(pending, []byte(field)) {
			t.Errorf("state %s lacks %s: the test covers less of the schema than it should", pending, field)
		}
	}

	// An event of a key with work pending waits in the events stream (the
	// stream is a work queue: an event is gone once applied); read it there.
	waiting := publish("order-42", "job-5", `{"event":"confirm_payment","data":{"amount_cents":1250}}`)
	stream, err := js.Stream(ctx, contract.EventsStream(order.Workflow))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := stream.GetMsg(ctx, waiting)
	if err != nil {
		t.Fatalf("the waiting event: %v", err)
	}
	if stored.Header.Get(contract.HeaderJobID) != "job-5" {
		t.Errorf("stored event %s has job id %q", stored.Subject, stored.Header.Get(contract.HeaderJobID))
	}
	if err := validate(eventSchema, stored.Data); err != nil {
		t.Errorf("stored event %s does not validate: %v", stored.Data, err)
	}

	close(gw.release)
	released = true
	if st := next("of job-3 settled", job("job-3", true)); st.To != string(order.AwaitingPayment) {
		t.Fatalf("job-3 settled in %+v, want %s", st, order.AwaitingPayment)
	}
	e, err := kv.Get(ctx, "order-42")
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(stateSchema, e.Value()); err != nil {
		t.Fatalf("state %s does not validate: %v", e.Value(), err)
	}

	// The statuses seen cover each optional part of the schema.
	covered := map[string]bool{}
	for _, st := range seen {
		covered["error"] = covered["error"] || st.Error != nil
		covered["action"] = covered["action"] || st.Action != ""
		covered["attempt"] = covered["attempt"] || st.Attempt != 0
		covered["unsettled"] = covered["unsettled"] || !st.Settled
	}
	if len(covered) != 4 || slices.Contains([]bool{covered["error"], covered["action"], covered["attempt"], covered["unsettled"]}, false) {
		t.Errorf("statuses %+v cover %v of error, action, attempt, unsettled", seen, covered)
	}

	next("of job-5 settled", job("job-5", true))

	// The body the worker refused as malformed, as the dead letters keep it:
	// the schema refuses it too.
	dlq, err := js.Stream(ctx, contract.DeadLetterStream(order.Workflow))
	if err != nil {
		t.Fatal(err)
	}
	dead, err := dlq.GetLastMsgForSubject(ctx, contract.DeadLetterSubject(order.Workflow, "order-43"))
	if err != nil {
		t.Fatalf("the dead letter of order-43: %v", err)
	}
	if reason := dead.Header.Get(contract.HeaderDLQReason); !strings.HasPrefix(reason, contract.CodeMalformed+": ") {
		t.Errorf("dead letter reason %q", reason)
	}
	if err := validate(eventSchema, dead.Data); err == nil {
		t.Errorf("event %s, dead-lettered as malformed, validates", dead.Data)
	}
}

// Documents the schemas must refuse, so that the test above can fail.
func TestWireContractSchemasRefuse(t *testing.T) {
	t.Parallel()
	status := `{"workflow":"order","key":"order-42","job_id":"job-1","event":"start_processing","from":"idle","to":"processing","version":1,"at":"2026-11-30T10:00:00.5Z","settled":false}`
	state := `{"state":"processing","version":1,"data":{},"updated_at":"2026-11-30T10:00:00Z","entered":1}`
	for _, c := range []struct {
		schema, doc string
		valid       bool
	}{
		{"event.schema.json", `{"event":"start_processing","data":{"n":1}}`, true},
		{"event.schema.json", `{"event":"start_processing"}`, true},
		{"event.schema.json", `{"event":"start_processing","extra":1}`, false},
		{"event.schema.json", `{"Event":"start_processing"}`, false},
		{"event.schema.json", `{"event":""}`, false},
		{"event.schema.json", `{"data":{}}`, false},
		{"event.schema.json", `{"event":1}`, false},
		{"event.schema.json", `["start_processing"]`, false},
		{"status.schema.json", status, true},
		{"status.schema.json", strings.Replace(status, `"settled":false`, `"settled":false,"new_field":1`, 1), true},
		{"status.schema.json", strings.Replace(status, `"settled":false`, `"settled":true,"error":{"code":"invalid_transition","message":"m"}`, 1), true},
		{"status.schema.json", strings.Replace(status, `"settled":false`, `"settled":true,"error":{"code":"no_such_code","message":"m"}`, 1), false},
		{"status.schema.json", strings.Replace(status, `"settled":false`, `"settled":true,"error":{"code":"malformed"}`, 1), false},
		{"status.schema.json", strings.Replace(status, `,"at":"2026-11-30T10:00:00.5Z"`, ``, 1), false},
		{"status.schema.json", strings.Replace(status, `2026-11-30T10:00:00.5Z`, `yesterday`, 1), false},
		{"status.schema.json", strings.Replace(status, `"version":1`, `"version":"1"`, 1), false},
		{"status.schema.json", strings.Replace(status, `"version":1`, `"version":-1`, 1), false},
		{"status.schema.json", strings.Replace(status, `order-42`, `order:42`, 1), false},
		{"status.schema.json", strings.Replace(status, `"workflow":"order"`, `"workflow":"Order"`, 1), false},
		{"status.schema.json", strings.Replace(status, `"settled":false`, `"settled":"no"`, 1), false},
		{"state.schema.json", state, true},
		{"state.schema.json", strings.Replace(state, `"entered":1`, `"entered":1,"pending":[{"id":"k/1/a","action":"a","job_id":"j","attempt":1}]`, 1), true},
		{"state.schema.json", strings.Replace(state, `"entered":1`, `"entered":1,"pending":[{"id":"k/1/a","action":"a"}]`, 1), false},
		{"state.schema.json", strings.Replace(state, `"entered":1`, `"entered":1,"pending":[{"id":"k/1/a","action":"a","job_id":"j","attempt":1,"since":"now"}]`, 1), false},
		{"state.schema.json", strings.Replace(state, `"data":{},`, ``, 1), false},
		{"state.schema.json", strings.Replace(state, `"state":"processing"`, `"state":""`, 1), false},
		{"state.schema.json", strings.Replace(state, `"version":1`, `"version":1.5`, 1), false},
		{"state.schema.json", strings.Replace(state, `"entered":1`, `"entered":1,"applied":[0]`, 1), false},
	} {
		err := validate(compileSchema(t, c.schema, ""), []byte(c.doc))
		if (err == nil) != c.valid {
			t.Errorf("%s: %s: valid %v, want %v (%v)", c.schema, c.doc, err == nil, c.valid, err)
		}
	}
}

// TestWireContractSchemaCodes: the schema's error codes are contract.Codes(),
// in that order.
func TestWireContractSchemaCodes(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(schemaDir, "status.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Defs struct {
			ErrorCode struct {
				Enum []string `json:"enum"`
			} `json:"errorCode"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if got := s.Defs.ErrorCode.Enum; !slices.Equal(got, contract.Codes()) {
		t.Errorf("status.schema.json error codes %q, contract.Codes() %q", got, contract.Codes())
	}
}

// TestWireContractSchemaNames: the schema's patterns for keys and workflow
// names accept exactly what ValidateKey and ValidateWorkflow accept.
func TestWireContractSchemaNames(t *testing.T) {
	t.Parallel()
	keySchema := compileSchema(t, "status.schema.json", "#/$defs/key")
	workflowSchema := compileSchema(t, "status.schema.json", "#/$defs/workflow")
	for _, s := range []string{
		"", "a", "order-42", "order_42", "ORDER=42", "=", "-", "_", "0",
		strings.Repeat("k", 64), strings.Repeat("k", 65), strings.Repeat("K", 128), strings.Repeat("K", 129),
		"order:42", "order.42", "order 42", "order*", "order>", "ordér", "order\n", "\norder", "a/b", "a\\b", "a\x00",
		"Order", "order-2_b", "9", "a=b", "\u0661",
	} {
		doc, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := validate(keySchema, doc) == nil, contract.ValidateKey(s) == nil; got != want {
			t.Errorf("key %q: schema valid %v, ValidateKey valid %v", s, got, want)
		}
		if got, want := validate(workflowSchema, doc) == nil, contract.ValidateWorkflow(s) == nil; got != want {
			t.Errorf("workflow %q: schema valid %v, ValidateWorkflow valid %v", s, got, want)
		}
	}
}
