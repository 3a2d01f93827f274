package soak

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/orderlytest"
	"github.com/orderly-dev/orderly/worker"
)

// TestWorkflowLogsEveryEvent: the checking workflow, on a real worker,
// logs each event applied, with its producer and sequence number, the
// outcome of the slow work with its job, and the worker that applied it; a
// client event sent while work is pending waits for it (the runtime holds
// it back). The gateway file turns the slow work into failures at run
// time: the outcome is then failed, after the retries.
func TestWorkflowLogsEveryEvent(t *testing.T) {
	t.Parallel()
	gw := filepath.Join(t.TempDir(), "gateway.json")
	write := func(g Gateway) {
		b, err := g.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(gw+".tmp", b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(gw+".tmp", gw); err != nil {
			t.Fatal(err)
		}
	}
	write(Gateway{Latency: 300 * time.Millisecond})
	wf, err := NewWorkflow(WorkflowConfig{Worker: "wt", GatewayFile: gw})
	if err != nil {
		t.Fatal(err)
	}
	h := orderlytest.Start(t, []worker.Workflow{wf}, orderlytest.WithConfig(func(c *worker.Config) {
		c.ActionRetries, c.RetryBackoff = 1, 10*time.Millisecond
	}))
	h.Send("k1", "add", Payload{Producer: 1, Seq: 1})
	work := h.Send("k1", "work", Payload{Producer: 1, Seq: 2})
	// Sent while the work of n2 is pending (it takes 300ms).
	h.Send("k1", "add", Payload{Producer: 2, Seq: 1})
	h.SendAndWait("k1", "add", Payload{Producer: 1, Seq: 3})
	rec := h.RequireState("k1", Ready)
	var d Data
	if err := json.Unmarshal(rec.Data, &d); err != nil {
		t.Fatal(err)
	}
	got := entriesOf(d.Log)
	want := []Entry{{Kind: EntryAdd, Producer: 1, Seq: 1}, {Kind: EntryWork, Producer: 1, Seq: 2}, {Kind: EntryDone, Job: work}, {Kind: EntryAdd, Producer: 2, Seq: 1}, {Kind: EntryAdd, Producer: 1, Seq: 3}}
	if !slices.Equal(got, want) {
		t.Fatalf("log %+v, want %+v", got, want)
	}
	if rec.Version != uint64(len(d.Log)) {
		t.Errorf("version %d, %d log entries", rec.Version, len(d.Log))
	}
	for _, e := range d.Log {
		if e.Worker != "wt" || e.At == 0 {
			t.Errorf("entry %+v: want worker wt and a time", e)
		}
	}

	write(Gateway{FailRate: 1})
	time.Sleep(300 * time.Millisecond) // the gateway file is read at most every 200ms
	st := h.SendAndWait("k2", "work", Payload{Producer: 1, Seq: 1})
	if st.Error == nil || st.Error.Code != contract.CodeActionFailed || st.Event != string(EventFailed) {
		t.Fatalf("work with the gateway failing: %+v, want action_failed on failed", st)
	}
	rec = h.RequireState("k2", Ready)
	d = Data{}
	if err := json.Unmarshal(rec.Data, &d); err != nil {
		t.Fatal(err)
	}
	if got := entriesOf(d.Log); !slices.Equal(got, []Entry{{Kind: EntryWork, Producer: 1, Seq: 1}, {Kind: EntryFailed}}) {
		t.Fatalf("log %+v, want work then failed", got)
	}

	// A payload without a producer or sequence is refused as invalid data.
	bad := h.Send("k3", "add", map[string]int{"p": 1})
	h.RequireRejected(bad, contract.CodeInvalidData)
}

// entriesOf drops what varies between runs: the worker and the time.
func entriesOf(log []Entry) []Entry {
	out := make([]Entry, len(log))
	for i, e := range log {
		e.Worker, e.At = "", 0
		out[i] = e
	}
	return out
}
