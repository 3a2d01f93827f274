package contractcheck_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/order"
)

// TestInventoryByStateSchemas: what a running worker writes into the
// inventory (a state entry, a work entry while the order's fetch waits)
// and into the workflows bucket validates against index.schema.json and
// workflow.schema.json, whose patterns for state names accept exactly what
// contract.ValidateStateName accepts.
func TestInventoryByStateSchemas(t *testing.T) {
	t.Parallel()
	entrySchema := compileSchema(t, "index.schema.json", "")
	workSchema := compileSchema(t, "index.schema.json", "#/$defs/workEntry")
	workflowSchema := compileSchema(t, "workflow.schema.json", "")

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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	kv, err := js.KeyValue(ctx, contract.WorkflowsBucket)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := kv.Get(ctx, order.Workflow)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(workflowSchema, desc.Value()); err != nil {
		t.Errorf("workflow %s does not validate: %v", desc.Value(), err)
	}

	publish := func(event string) {
		t.Helper()
		m := nats.NewMsg(contract.EventSubject(order.Workflow, "order-7"))
		m.Data = []byte(`{"event":"` + event + `"}`)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	publish("start_processing")
	publish("request_payment")
	select {
	case <-gw.authorizing: // the second attempt: the first failed, the work stays pending
	case <-ctx.Done():
		t.Fatal("the authorization never started again")
	}
	index, err := js.Stream(ctx, contract.IndexStream(order.Workflow))
	if err != nil {
		t.Fatal(err)
	}
	var entry, work *jetstream.RawStreamMsg
	for entry == nil || work == nil {
		entry, _ = index.GetLastMsgForSubject(ctx, contract.IndexStateSubject(order.Workflow, string(order.Processing), "order-7"))
		work, _ = index.GetLastMsgForSubject(ctx, contract.IndexWorkSubject(order.Workflow, "order-7"))
		select {
		case <-ctx.Done():
			t.Fatalf("entries of order-7: state %v, work %v", entry, work)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := validate(entrySchema, entry.Data); err != nil {
		t.Errorf("entry %s does not validate: %v", entry.Data, err)
	}
	if err := validate(workSchema, work.Data); err != nil {
		t.Errorf("work entry %s does not validate: %v", work.Data, err)
	}
	close(gw.release)
	released = true

	for _, c := range []struct {
		schema    string
		fragment  string
		doc       string
		wantValid bool
	}{
		{"index.schema.json", "", `{"workflow":"order","key":"k","state":"processing","version":1,"since":"2026-11-30T10:00:00Z"}`, true},
		{"index.schema.json", "", `{"workflow":"order","key":"k","state":"a.b","version":1,"since":"2026-11-30T10:00:00Z"}`, false},
		{"index.schema.json", "", `{"workflow":"order","key":"k","state":"processing","version":1}`, false},
		{"index.schema.json", "", `{"workflow":"order","key":"k","state":"processing","version":-1,"since":"2026-11-30T10:00:00Z"}`, false},
		{"index.schema.json", "#/$defs/workEntry", `{"workflow":"order","key":"k","action":"a","job_id":"j","attempt":1,"since":"2026-11-30T10:00:00Z"}`, true},
		{"index.schema.json", "#/$defs/workEntry", `{"workflow":"order","key":"k","action":"a","job_id":"j","attempt":0,"since":"2026-11-30T10:00:00Z"}`, false},
		{"workflow.schema.json", "", `{"name":"order","initial":"idle","states":[{"name":"idle"}],"events":[],"actions":[],"mermaid":"","inventory":true}`, true},
		{"workflow.schema.json", "", `{"name":"order","initial":"idle","states":[],"events":[],"actions":[],"mermaid":"","inventory":true}`, false},
		{"workflow.schema.json", "", `{"name":"Order","initial":"idle","states":[{"name":"idle"}],"events":[],"actions":[],"mermaid":"","inventory":true}`, false},
	} {
		if err := validate(compileSchema(t, c.schema, c.fragment), []byte(c.doc)); (err == nil) != c.wantValid {
			t.Errorf("%s%s: %s: valid %v, want %v (%v)", c.schema, c.fragment, c.doc, err == nil, c.wantValid, err)
		}
	}
	stateSchema := compileSchema(t, "index.schema.json", "#/$defs/state")
	for _, s := range []string{"", "a", "in_review", "Step-2", strings.Repeat("s", 64), strings.Repeat("s", 65), "a.b", "a b", "a*", "é", "a=b"} {
		doc := []byte(`"` + s + `"`)
		if got, want := validate(stateSchema, doc) == nil, contract.ValidateStateName(s) == nil; got != want {
			t.Errorf("state %q: schema valid %v, ValidateStateName valid %v", s, got, want)
		}
	}
}
