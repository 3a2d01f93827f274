package worker_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

type fragile struct{ N int }

// fragileWorkflow panics where its events ask it to: in a transition's
// update ("poke" with data "boom") and in its action ("risk").
func fragileWorkflow(t *testing.T) worker.Workflow {
	t.Helper()
	m, err := statemachine.New(statemachine.Definition[fragile]{
		Name: "fragile", Initial: "open",
		States: []statemachine.StateDef{{Name: "open"}, {Name: "failed", Terminal: true}},
		Events: []statemachine.EventDef{
			{Name: "poke", Client: true}, {Name: "risk", Client: true}, {Name: "risked"}, {Name: "risk_failed"},
		},
		Actions: []statemachine.ActionDef{{Name: "gamble", OnSuccess: "risked", OnFailure: "risk_failed"}},
		Transitions: []statemachine.Transition[fragile]{
			{From: "open", On: "poke", To: "open", Update: func(d fragile, in statemachine.Input) (fragile, error) {
				if string(in.Data) == `"boom"` {
					var m map[string]int
					m["boom"]++ // a bug: a nil map
				}
				d.N++
				return d, nil
			}},
			{From: "open", On: "risk", To: "open", Actions: []string{"gamble"}},
			{From: "open", On: "risked", To: "open"},
			{From: "open", On: "risk_failed", To: "failed"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	wf, err := worker.NewWorkflow(m, map[string]worker.ActionFunc[fragile]{
		"gamble": func(context.Context, worker.ActionCall[fragile]) (any, error) {
			var p *fragile
			return p.N, nil // a bug: a nil pointer
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return wf
}

// TestPanicInWorkflowCodeIsContained: a panic in a workflow's transition or
// action, on one event, cost the whole worker process; restarted, it took
// the event again and died again, and so did every replica the partition
// moved to. Now the event whose transition panicked is dead-lettered with
// code panicked (to be replayed once the code is fixed), an action that
// panicked has failed for good, and the key and the worker go on.
func TestPanicInWorkflowCodeIsContained(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	cl := natstest.Client(t, srv.ClientURL())
	w := startWorkerOf(t, srv.ClientURL(), worker.Config{Queue: worker.QueueConfig{Partitions: 1}}, fragileWorkflow(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wait := func(key, event string, data json.RawMessage) contract.Status {
		t.Helper()
		_, st, err := cl.PublishAndWait(ctx, "fragile", key, contract.Envelope{Event: event, Data: data})
		if err != nil {
			t.Fatalf("%s %s: %v", key, event, err)
		}
		return st
	}

	st := wait("k1", "poke", json.RawMessage(`"boom"`))
	if st.Error == nil || st.Error.Code != contract.CodePanicked || !strings.Contains(st.Error.Message, "nil map") {
		t.Fatalf("status of the event whose transition panicked: %+v; want code %s naming the panic", st, contract.CodePanicked)
	}
	if st := wait("k1", "poke", nil); st.Error != nil || st.Version != 1 {
		t.Fatalf("the key's next event: %+v; want it applied at version 1", st)
	}
	dls, err := cl.DeadLetters(ctx, "fragile", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || !strings.HasPrefix(dls[0].Reason, contract.CodePanicked+": ") || dls[0].Key != "k1" {
		t.Fatalf("dead letters: %+v; want k1's panicking event, reason %s", dls, contract.CodePanicked)
	}

	// The action's panic is its failure, once: no retry can cure a bug.
	st = wait("k2", "risk", nil)
	if st.Error == nil || st.Error.Code != contract.CodeActionFailed || !strings.Contains(st.Error.Message, "panic") || st.To != "failed" {
		t.Fatalf("status of the action that panicked: %+v; want action_failed naming the panic, in failed", st)
	}
	if st := wait("k3", "poke", nil); st.Error != nil {
		t.Fatalf("another key after both panics: %+v", st)
	}
	if p := w.Problems(); len(p) != 0 {
		t.Logf("problems: %v", p)
	}
}
