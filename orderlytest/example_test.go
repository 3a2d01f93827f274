package orderlytest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/orderly-dev/orderly/orderlytest"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// Ticket is the data of the support-ticket workflow the examples test:
//
//	open     --assign-->  assigned   page the assignee (paged, or page_failed: back to open)
//	assigned --resolve--> resolved
//	assigned after 24h    escalated
type Ticket struct {
	Assignee string `json:"assignee"`
}

// ticketWorkflow builds the workflow with page as its one action.
func ticketWorkflow(page worker.ActionFunc[Ticket]) worker.Workflow {
	return namedTicketWorkflow("ticket", page)
}

func namedTicketWorkflow(name string, page worker.ActionFunc[Ticket]) worker.Workflow {
	type T = statemachine.Transition[Ticket]
	m := statemachine.MustNew(statemachine.Definition[Ticket]{
		Name:    name,
		Initial: "open",
		States: []statemachine.StateDef{
			{Name: "open"},
			{Name: "assigned", Timeout: &statemachine.Timeout{After: 24 * time.Hour, Event: "stale"}},
			{Name: "resolved", Terminal: true},
			{Name: "escalated", Terminal: true},
		},
		Events: []statemachine.EventDef{
			{Name: "assign", Client: true}, {Name: "resolve", Client: true},
			{Name: "paged"}, {Name: "page_failed"}, {Name: "stale"},
		},
		Actions: []statemachine.ActionDef{{Name: "page", OnSuccess: "paged", OnFailure: "page_failed"}},
		Transitions: []T{
			{From: "open", On: "assign", To: "assigned", Actions: []string{"page"},
				Update: func(d Ticket, in statemachine.Input) (Ticket, error) {
					if err := json.Unmarshal(in.Data, &d); err != nil || d.Assignee == "" {
						return d, errors.New(`want {"assignee": "..."}`)
					}
					return d, nil
				}},
			{From: "assigned", On: "paged", To: "assigned"},
			{From: "assigned", On: "page_failed", To: "open"},
			{From: "assigned", On: "resolve", To: "resolved"},
			{From: "assigned", On: "stale", To: "escalated"},
		},
	})
	wf, err := worker.NewWorkflow(m, map[string]worker.ActionFunc[Ticket]{"page": page})
	if err != nil {
		panic(err)
	}
	return wf
}

func page(context.Context, worker.ActionCall[Ticket]) (any, error) { return nil, nil }

// A test of a workflow: send events, wait for states. In a real test, t is
// the test's *testing.T.
func Example() {
	t := newExampleT()
	defer t.finish()

	h := orderlytest.Start(t, []worker.Workflow{ticketWorkflow(page)})
	st := h.SendAndWait("t-1", "assign", Ticket{Assignee: "ada"})
	fmt.Println(st.Event, st.From, "->", st.To, "settled:", st.Settled)

	h.Send("t-1", "resolve", nil)
	rec := h.RequireState("t-1", "resolved")
	fmt.Println(rec.State, string(rec.Data))
	// Output:
	// paged assigned -> assigned settled: true
	// resolved {"assignee":"ada"}
}

// A 24-hour timeout, tested in about a second.
func ExampleHarness_Advance() {
	t := newExampleT()
	defer t.finish()

	h := orderlytest.Start(t, []worker.Workflow{ticketWorkflow(page)})
	h.SendAndWait("t-1", "assign", Ticket{Assignee: "ada"})

	h.Advance(25 * time.Hour)
	h.RequireState("t-1", "escalated")
	sts := h.Statuses("t-1")
	last := sts[len(sts)-1]
	fmt.Println(last.Event, last.From, "->", last.To)
	// Output:
	// stale assigned -> escalated
}

// Events the workflow refuses are reported, not dropped.
func ExampleHarness_RequireRejected() {
	t := newExampleT()
	defer t.finish()

	h := orderlytest.Start(t, []worker.Workflow{ticketWorkflow(page)})
	job := h.Send("t-1", "resolve", nil) // not assigned yet
	st := h.RequireRejected(job, "invalid_transition")
	fmt.Println(st.Error.Message)

	job = h.Send("t-1", "assign", map[string]string{"assignee": ""})
	fmt.Println(h.RequireRejected(job, "invalid_data").To)
	// Output:
	// invalid transition: event "resolve" in state "open"
	// open
}

// A spy records how an action was called.
func ExampleNewSpy() {
	t := newExampleT()
	defer t.finish()

	spy := orderlytest.NewSpy(func(context.Context, worker.ActionCall[Ticket]) (any, error) {
		return nil, worker.Permanent(errors.New("pager down"))
	})
	h := orderlytest.Start(t, []worker.Workflow{ticketWorkflow(spy.Func)})
	st := h.SendAndWait("t-1", "assign", Ticket{Assignee: "ada"})
	fmt.Println(st.Event, "->", st.To, st.Error.Code)

	for _, c := range spy.RequireCalled(t, 1) {
		fmt.Println(c.Action, c.Key, c.Attempt, c.Data.Assignee)
	}
	// Output:
	// page_failed -> open action_failed
	// page t-1 1 ada
}
