package statemachine_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	sm "github.com/orderly-dev/orderly/statemachine"
)

type jobData struct{ N int }

var (
	errNegative     = errors.New("negative")
	errNotVeryNeg   = errors.New("not very negative")
	jobTimeout      = sm.Timeout{After: time.Minute, Event: "expire"}
	nonNegative     = func(d jobData, _ sm.Input) error { return cond(d.N >= 0, errNegative) }
	veryNegative    = func(d jobData, _ sm.Input) error { return cond(d.N < -10, errNotVeryNeg) }
	decodeN         = func(d jobData, in sm.Input) (jobData, error) { return d, json.Unmarshal(in.Data, &d.N) }
	jobTransitionsN = 6
)

func cond(ok bool, err error) error {
	if ok {
		return nil
	}
	return err
}

// jobDef is a small valid definition; each call returns fresh slices so tests
// can break it freely.
func jobDef() sm.Definition[jobData] {
	timeout := jobTimeout
	return sm.Definition[jobData]{
		Name:    "job",
		Initial: "new",
		States: []sm.StateDef{
			{Name: "new"},
			{Name: "running", Timeout: &timeout},
			{Name: "done", Terminal: true},
			{Name: "dead", Terminal: true},
		},
		Events: []sm.EventDef{
			{Name: "start", Client: true},
			{Name: "ping", Client: true},
			{Name: "finish"},
			{Name: "fail"},
			{Name: "expire"},
		},
		Actions: []sm.ActionDef{{Name: "work", OnSuccess: "finish", OnFailure: "fail"}},
		Transitions: []sm.Transition[jobData]{
			{From: "new", On: "start", To: "running", Guard: nonNegative, Actions: []string{"work"}},
			{From: "new", On: "start", To: "dead", Guard: veryNegative},
			{From: "running", On: "ping", To: "running"},
			{From: "running", On: "finish", To: "done", Update: decodeN},
			{From: "running", On: "fail", To: "dead"},
			{From: "running", On: "expire", To: "dead"},
		},
	}
}

func TestNewValid(t *testing.T) {
	m, err := sm.New(jobDef())
	if err != nil {
		t.Fatal(err)
	}
	if m.Name() != "job" || m.Initial() != "new" || len(m.States()) != 4 || len(m.Events()) != 5 || len(m.Actions()) != 1 {
		t.Fatalf("accessors disagree with the definition")
	}
	if !m.IsTerminal("done") || m.IsTerminal("running") || m.IsTerminal("ghost") {
		t.Error("IsTerminal")
	}
	if !m.IsClientEvent("start") || m.IsClientEvent("finish") || m.IsClientEvent("ghost") {
		t.Error("IsClientEvent")
	}
	if !m.HasEvent("finish") || m.HasEvent("ghost") {
		t.Error("HasEvent")
	}
	if a, ok := m.Action("work"); !ok || a.OnSuccess != "finish" {
		t.Error("Action")
	}
	if _, ok := m.Action("ghost"); ok {
		t.Error("Action(ghost) found")
	}
	if s, ok := m.State("running"); !ok || s.Timeout == nil || *s.Timeout != jobTimeout {
		t.Error("State(running)")
	}
}

func TestMachineIsImmutable(t *testing.T) {
	def := jobDef()
	m := sm.MustNew(def)
	def.States[1].Timeout.After = time.Hour
	def.Transitions[0].Actions[0] = "changed"
	def.Events[0].Client = false
	if s, _ := m.State("running"); s.Timeout.After != time.Minute {
		t.Error("machine shares the caller's Timeout")
	}
	if !m.IsClientEvent("start") {
		t.Error("machine shares the caller's events")
	}
	if step, _ := m.Apply("new", jobData{}, sm.Input{Event: "start"}); step.Actions[0].Name != "work" {
		t.Error("machine shares the caller's actions")
	}
}

func TestApply(t *testing.T) {
	m := sm.MustNew(jobDef())
	tests := []struct {
		name     string
		from     sm.State
		data     jobData
		in       sm.Input
		wantTo   sm.State
		wantData jobData
		actions  int
		arm      *sm.Timeout
		cancel   bool
		code     string
	}{
		{name: "first passing guard wins", from: "new", in: sm.Input{Event: "start"}, wantTo: "running", actions: 1, arm: &jobTimeout},
		{name: "second guard passes", from: "new", data: jobData{-20}, in: sm.Input{Event: "start"}, wantTo: "dead", wantData: jobData{-20}},
		{name: "self-loop keeps the timer", from: "running", in: sm.Input{Event: "ping"}, wantTo: "running"},
		{name: "update and cancel", from: "running", in: sm.Input{Event: "finish", Data: json.RawMessage(`7`), Source: sm.SourceAction}, wantTo: "done", wantData: jobData{7}, cancel: true},
		{name: "timer event", from: "running", in: sm.Input{Event: "expire", Source: sm.SourceTimer}, wantTo: "dead", cancel: true},
		{name: "all guards refuse", from: "new", data: jobData{-5}, in: sm.Input{Event: "start"}, code: contract.CodeGuardRefused},
		{name: "update refuses", from: "running", in: sm.Input{Event: "finish", Data: json.RawMessage(`"x"`), Source: sm.SourceAction}, code: contract.CodeInvalidData},
		{name: "unknown event", from: "new", in: sm.Input{Event: "ghost"}, code: contract.CodeUnknownEvent},
		{name: "unknown event beats unknown state", from: "ghost", in: sm.Input{Event: "ghost"}, code: contract.CodeUnknownEvent},
		{name: "client sends internal", from: "running", in: sm.Input{Event: "finish", Data: json.RawMessage(`1`)}, code: contract.CodeInternalEvent},
		{name: "unknown state", from: "ghost", in: sm.Input{Event: "start"}, code: contract.CodeUnknownState},
		{name: "no transition", from: "new", in: sm.Input{Event: "ping"}, code: contract.CodeInvalidTransition},
		{name: "terminal", from: "done", in: sm.Input{Event: "start"}, code: contract.CodeInvalidTransition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			step, err := m.Apply(tt.from, tt.data, tt.in)
			if got := sm.Code(err); got != tt.code {
				t.Fatalf("Code(%v) = %q, want %q", err, got, tt.code)
			}
			if err != nil {
				return
			}
			if step.From != tt.from || step.To != tt.wantTo || step.Event != tt.in.Event || step.Data != tt.wantData {
				t.Errorf("step = %+v", step)
			}
			if len(step.Actions) != tt.actions || step.Cancel != tt.cancel {
				t.Errorf("actions %v cancel %v", step.Actions, step.Cancel)
			}
			if (step.Arm == nil) != (tt.arm == nil) || step.Arm != nil && *step.Arm != *tt.arm {
				t.Errorf("arm = %v, want %v", step.Arm, tt.arm)
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	m := sm.MustNew(jobDef())

	_, err := m.Apply("new", jobData{-5}, sm.Input{Event: "start"})
	var ge *sm.GuardError
	if !errors.As(err, &ge) || ge.From != "new" || ge.Event != "start" || len(ge.Reasons) != 2 {
		t.Fatalf("err = %#v, want a GuardError with both reasons", err)
	}
	if !errors.Is(err, errNegative) || !errors.Is(err, errNotVeryNeg) {
		t.Error("GuardError does not unwrap to its reasons")
	}
	// Its message, the status's error message, names the event, the state
	// and every reason.
	for _, want := range []string{`"start"`, `"new"`, errNegative.Error(), errNotVeryNeg.Error()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("GuardError says %q, lacking %s", err, want)
		}
	}

	_, err = m.Apply("done", jobData{}, sm.Input{Event: "fail", Source: sm.SourceAction})
	var ie *sm.InvalidTransitionError
	if !errors.As(err, &ie) || ie.From != "done" || ie.Event != "fail" {
		t.Fatalf("err = %v, want InvalidTransitionError", err)
	}
	if want := `invalid transition: event "fail" in state "done"`; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}

	_, err = m.Apply("running", jobData{}, sm.Input{Event: "finish", Data: json.RawMessage(`"x"`), Source: sm.SourceAction})
	var se *json.UnmarshalTypeError
	if !errors.Is(err, sm.ErrInvalidData) || !errors.As(err, &se) {
		t.Errorf("err = %v, want ErrInvalidData wrapping the decode error", err)
	}

	for _, tc := range []struct {
		err  error
		code string
	}{
		{sm.ErrUnknownEvent, contract.CodeUnknownEvent},
		{sm.ErrInternalEvent, contract.CodeInternalEvent},
		{sm.ErrInvalidData, contract.CodeInvalidData},
		{sm.ErrUnknownState, contract.CodeUnknownState},
		{&sm.InvalidTransitionError{}, contract.CodeInvalidTransition},
		{&sm.GuardError{}, contract.CodeGuardRefused},
		{errors.New("boom"), "internal"},
		{nil, ""},
	} {
		if got := sm.Code(tc.err); got != tc.code {
			t.Errorf("Code(%v) = %q, want %q", tc.err, got, tc.code)
		}
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(d *sm.Definition[jobData])
		want   string
	}{
		{"empty name", func(d *sm.Definition[jobData]) { d.Name = "" }, `invalid workflow name: ""`},
		{"bad name", func(d *sm.Definition[jobData]) { d.Name = "Job.x" }, `invalid workflow name: "Job.x"`},
		{"initial undefined", func(d *sm.Definition[jobData]) { d.Initial = "nope" }, `initial state "nope" is not defined`},
		{"empty state name", func(d *sm.Definition[jobData]) { d.States = append(d.States, sm.StateDef{}) }, `state 4 has an empty name`},
		{"duplicate state", func(d *sm.Definition[jobData]) { d.States = append(d.States, sm.StateDef{Name: "done"}) }, `duplicate state "done"`},
		{"duplicate event", func(d *sm.Definition[jobData]) { d.Events = append(d.Events, sm.EventDef{Name: "ping"}) }, `duplicate event "ping"`},
		{"duplicate action", func(d *sm.Definition[jobData]) { d.Actions = append(d.Actions, d.Actions[0]) }, `duplicate action "work"`},
		{"from unknown", func(d *sm.Definition[jobData]) { d.Transitions[2].From = "ghost" }, `from state "ghost" is not defined`},
		{"to unknown", func(d *sm.Definition[jobData]) { d.Transitions[2].To = "ghost" }, `to state "ghost" is not defined`},
		{"event undeclared", func(d *sm.Definition[jobData]) { d.Transitions[2].On = "ghost" }, `event "ghost" is not declared`},
		{"action undeclared", func(d *sm.Definition[jobData]) { d.Transitions[2].Actions = []string{"ghost"} }, `action "ghost" is not declared`},
		{"unreachable", func(d *sm.Definition[jobData]) {
			d.States = append(d.States, sm.StateDef{Name: "orphan", Terminal: true})
		}, `state "orphan" is unreachable from the initial state "new"`},
		{"terminal with way out", func(d *sm.Definition[jobData]) {
			d.Transitions = append(d.Transitions, sm.Transition[jobData]{From: "done", On: "ping", To: "running"})
		}, `terminal state "done" has an outgoing transition`},
		{"no way out", func(d *sm.Definition[jobData]) {
			d.States = append(d.States, sm.StateDef{Name: "stuck"})
			d.Transitions = append(d.Transitions,
				sm.Transition[jobData]{From: "new", On: "ping", To: "stuck"},
				sm.Transition[jobData]{From: "stuck", On: "ping", To: "stuck"})
		}, `non-terminal state "stuck" has no way out`},
		{"outcome undeclared", func(d *sm.Definition[jobData]) { d.Actions[0].OnSuccess = "ghost" }, `action "work" OnSuccess: event "ghost" is not declared`},
		{"outcome empty", func(d *sm.Definition[jobData]) { d.Actions[0].OnFailure = "" }, `action "work" OnFailure: event is empty`},
		{"outcome is client", func(d *sm.Definition[jobData]) { d.Actions[0].OnFailure = "ping" }, `action "work" OnFailure: event "ping" is a client event`},
		{"outcome accepted nowhere", func(d *sm.Definition[jobData]) {
			d.Events = append(d.Events, sm.EventDef{Name: "other_ok"}, sm.EventDef{Name: "other_failed"})
			d.Actions = append(d.Actions, sm.ActionDef{Name: "other", OnSuccess: "other_ok", OnFailure: "other_failed"})
		}, `action "other" OnSuccess: event "other_ok" is accepted by no transition`},
		{"outcome not accepted where started", func(d *sm.Definition[jobData]) { d.Transitions[1].Actions = []string{"work"} },
			`action "work" OnSuccess: event "finish" is not accepted in state "dead", where the action is started`},
		{"timeout undeclared", func(d *sm.Definition[jobData]) { d.States[1].Timeout.Event = "ghost" }, `state "running" timeout: event "ghost" is not declared`},
		{"timeout is client", func(d *sm.Definition[jobData]) { d.States[1].Timeout.Event = "start" }, `state "running" timeout: event "start" is a client event`},
		{"timeout accepted nowhere", func(d *sm.Definition[jobData]) {
			d.States[0].Timeout = &sm.Timeout{After: time.Second, Event: "expire"}
		}, `state "new" timeout: event "expire" is accepted by no transition from that state`},
		{"timeout not positive", func(d *sm.Definition[jobData]) { d.States[1].Timeout.After = 0 }, `state "running" timeout: After must be positive, got 0s`},
		{"duplicate transition", func(d *sm.Definition[jobData]) { d.Transitions = append(d.Transitions, d.Transitions[4]) },
			`transition 6 (running --fail--> dead) can never fire: transition 4 on the same state and event has no guard`},
		{"two unguarded", func(d *sm.Definition[jobData]) {
			d.Transitions = append(d.Transitions, sm.Transition[jobData]{From: "running", On: "ping", To: "done"})
		}, `transition 6 (running --ping--> done) can never fire: transition 2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := jobDef()
			tt.mutate(&def)
			_, err := sm.New(def)
			var ve *sm.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("New = %v, want a ValidationError", err)
			}
			if !hasProblem(ve, tt.want) {
				t.Errorf("problems %q\ndo not include %q", ve.Problems, tt.want)
			}
		})
	}
}

// TestInventoryByStateStateNames: a state's name is accepted exactly when
// the contract accepts it (contract.ValidateStateName: 1-64 characters of
// A-Z a-z 0-9 - _), since it is a token of the inventory's subjects; the
// problem names the state and the rule.
func TestInventoryByStateStateNames(t *testing.T) {
	for _, name := range []string{
		"finished", "Done", "in_review", "step-2", "9", strings.Repeat("s", contract.MaxStateNameLen),
		strings.Repeat("s", contract.MaxStateNameLen+1), "a.b", "a b", "a*", "a>", "é", "a=b", "a/b",
	} {
		def := jobDef()
		def.States = append(def.States, sm.StateDef{Name: sm.State(name), Terminal: true})
		def.Transitions = append(def.Transitions, sm.Transition[jobData]{From: "new", On: "ping", To: sm.State(name)})
		_, err := sm.New(def)
		want := contract.ValidateStateName(name)
		if (err == nil) != (want == nil) {
			t.Errorf("New with state %q: %v; contract.ValidateStateName: %v", name, err, want)
			continue
		}
		var ve *sm.ValidationError
		if want != nil && (!errors.As(err, &ve) || !hasProblem(ve, want.Error()) || !hasProblem(ve, "state names are tokens")) {
			t.Errorf("New with state %q: %v, want the problem %q", name, err, want)
		}
	}
}

// TestWireContractWorkflowNames: a definition's name is accepted exactly when
// the contract accepts it as a workflow name, the 64-character limit
// included (the name ends up in stream and bucket names).
func TestWireContractWorkflowNames(t *testing.T) {
	for _, name := range []string{
		"job", "a", "order-2_b", strings.Repeat("a", contract.MaxWorkflowLen), strings.Repeat("a", contract.MaxWorkflowLen+1),
		"", "Job", "a.b", "a b", "a*", "a>", "é", "a=b",
	} {
		def := jobDef()
		def.Name = name
		_, err := sm.New(def)
		want := contract.ValidateWorkflow(name)
		if (err == nil) != (want == nil) {
			t.Errorf("New with name %q: %v; contract.ValidateWorkflow: %v", name, err, want)
			continue
		}
		var ve *sm.ValidationError
		if want != nil && (!errors.As(err, &ve) || !hasProblem(ve, want.Error())) {
			t.Errorf("New with name %q: %v, want the problem %q", name, err, want)
		}
	}
}

func TestValidationReportsEveryProblem(t *testing.T) {
	def := sm.Definition[jobData]{
		Name:    "Bad Name",
		Initial: "start",
		States: []sm.StateDef{
			{Name: "a", Timeout: &sm.Timeout{After: -time.Second, Event: "go"}},
			{Name: "a"},
			{Name: "b"},
			{Name: "end", Terminal: true},
		},
		Events:  []sm.EventDef{{Name: "go", Client: true}, {Name: "go"}},
		Actions: []sm.ActionDef{{Name: "x", OnSuccess: "missing", OnFailure: "go"}},
		Transitions: []sm.Transition[jobData]{
			{From: "a", On: "go", To: "nowhere", Actions: []string{"y"}},
			{From: "a", On: "go", To: "a"},
			{From: "end", On: "go", To: "a"},
		},
	}
	_, err := sm.New(def)
	var ve *sm.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("New = %v, want a ValidationError", err)
	}
	want := []string{
		`invalid workflow name: "Bad Name"`,
		`duplicate state "a"`,
		`initial state "start" is not defined`,
		`duplicate event "go"`,
		`transition 0 (a --go--> nowhere): to state "nowhere" is not defined`,
		`transition 0 (a --go--> nowhere): action "y" is not declared`,
		`terminal state "end" has an outgoing transition`,
		`action "x" OnSuccess: event "missing" is not declared`,
		`action "x" OnFailure: event "go" is a client event`,
		`state "a" timeout: After must be positive, got -1s`,
		`state "a" timeout: event "go" is a client event`,
		`transition 1 (a --go--> a) can never fire: transition 0`,
		`non-terminal state "b" has no way out`,
	}
	for _, w := range want {
		if !hasProblem(ve, w) {
			t.Errorf("missing problem %q", w)
		}
	}
	if len(ve.Problems) != len(want) {
		t.Errorf("%d problems, want %d: %q", len(ve.Problems), len(want), ve.Problems)
	}
	for _, p := range ve.Problems {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("Error() does not list %q", p)
		}
	}
}

func hasProblem(ve *sm.ValidationError, want string) bool {
	for _, p := range ve.Problems {
		if strings.Contains(p, want) {
			return true
		}
	}
	return false
}

func TestMustNewPanics(t *testing.T) {
	defer func() {
		if _, ok := recover().(*sm.ValidationError); !ok {
			t.Error("MustNew did not panic with a ValidationError")
		}
	}()
	sm.MustNew(sm.Definition[jobData]{})
}

func TestDOT(t *testing.T) {
	m := sm.MustNew(jobDef())
	got := m.DOT()
	if got != m.DOT() {
		t.Fatal("DOT is not deterministic")
	}
	for _, want := range []string{
		`digraph "job" {`,
		`__start -> "new";`,
		`"done" [peripheries=2];`,
		`"new" -> "running" [label="start [guarded] / work"];`,
		`"running" -> "dead" [label="expire (after 1m0s)"];`,
		`"running" -> "done" [label="finish (work ok)"];`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("DOT lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, " -> ") - 1; n != jobTransitionsN {
		t.Errorf("%d edges, want %d", n, jobTransitionsN)
	}
}
