package statemachine_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	sm "github.com/orderly-dev/orderly/statemachine"
)

// periodicDef is jobDef with a heartbeat every 30s while running.
func periodicDef() sm.Definition[jobData] {
	def := jobDef()
	def.Events = append(def.Events, sm.EventDef{Name: "beat"})
	def.States[1].Every = []sm.Periodic{sm.Every(30*time.Second, "beat")}
	def.Transitions = append(def.Transitions, sm.Transition[jobData]{From: "running", On: "beat", To: "running"})
	return def
}

func TestPeriodicWorkValidation(t *testing.T) {
	if _, err := sm.New(periodicDef()); err != nil {
		t.Fatalf("valid definition refused: %v", err)
	}
	tests := []struct {
		name   string
		mutate func(d *sm.Definition[jobData])
		want   string
	}{
		{"zero interval", func(d *sm.Definition[jobData]) { d.States[1].Every[0].Interval = 0 },
			`state "running" periodic event 0: Interval must be positive, got 0s`},
		{"negative interval", func(d *sm.Definition[jobData]) { d.States[1].Every[0].Interval = -time.Minute },
			`state "running" periodic event 0: Interval must be positive, got -1m0s`},
		{"under a second", func(d *sm.Definition[jobData]) { d.States[1].Every[0].Interval = 500 * time.Millisecond },
			`state "running" periodic event 0: Interval 500ms is not a whole number of seconds: the broker schedules periodic events at whole seconds`},
		{"not whole seconds", func(d *sm.Definition[jobData]) { d.States[1].Every[0].Interval = 1500 * time.Millisecond },
			`Interval 1.5s is not a whole number of seconds`},
		{"undeclared", func(d *sm.Definition[jobData]) { d.States[1].Every[0].Event = "ghost" },
			`state "running" periodic event 0: event "ghost" is not declared`},
		{"empty", func(d *sm.Definition[jobData]) { d.States[1].Every[0].Event = "" },
			`state "running" periodic event 0: event is empty`},
		{"client event", func(d *sm.Definition[jobData]) { d.States[1].Every[0].Event = "ping" },
			`state "running" periodic event 0: event "ping" is a client event; it must be internal so clients cannot forge it`},
		{"accepted nowhere in the state", func(d *sm.Definition[jobData]) {
			d.States[0].Every = []sm.Periodic{sm.Every(time.Second, "beat")}
		}, `state "new" periodic event 0: event "beat" is accepted by no transition from that state`},
		{"in a terminal state", func(d *sm.Definition[jobData]) {
			d.States[2].Every = []sm.Periodic{sm.Every(time.Second, "beat")}
		}, `state "done" periodic event 0: event "beat" is accepted by no transition from that state`},
		{"twice in a state", func(d *sm.Definition[jobData]) {
			d.States[1].Every = append(d.States[1].Every, sm.Every(time.Minute, "beat"))
		}, `state "running" periodic event 1: event "beat" is periodic in that state already`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := periodicDef()
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

// TestPeriodicWorkIsInternal: a client cannot send a periodic event; the
// runtime, as a timer, can, and the self-loop it takes keeps the state.
func TestPeriodicWorkIsInternal(t *testing.T) {
	m := sm.MustNew(periodicDef())
	if _, err := m.Apply("running", jobData{}, sm.Input{Event: "beat", Source: sm.SourceClient}); !errors.Is(err, sm.ErrInternalEvent) {
		t.Errorf("client beat: %v, want ErrInternalEvent", err)
	}
	step, err := m.Apply("running", jobData{}, sm.Input{Event: "beat", Source: sm.SourceTimer})
	if err != nil || step.To != "running" || step.Arm != nil || step.Cancel {
		t.Errorf("timer beat: %+v, %v", step, err)
	}
	s, _ := m.State("running")
	if len(s.Every) != 1 || s.Every[0] != sm.Every(30*time.Second, "beat") {
		t.Errorf("State(running).Every = %v", s.Every)
	}
}

// TestPeriodicWorkImmutable: changing the definition after New changes
// nothing in the machine.
func TestPeriodicWorkImmutable(t *testing.T) {
	def := periodicDef()
	m := sm.MustNew(def)
	def.States[1].Every[0].Interval = time.Hour
	if s, _ := m.State("running"); s.Every[0].Interval != 30*time.Second {
		t.Errorf("the machine's interval changed with its definition: %v", s.Every[0].Interval)
	}
}

func TestPeriodicWorkDiagrams(t *testing.T) {
	m := sm.MustNew(periodicDef())
	if got, want := m.Mermaid(), "    running --> running: beat (every 30s)\n"; !strings.Contains(got, want) {
		t.Errorf("Mermaid lacks %q:\n%s", want, got)
	}
	if got, want := m.DOT(), `    "running" -> "running" [label="beat (every 30s)"];`; !strings.Contains(got, want) {
		t.Errorf("DOT lacks %q:\n%s", want, got)
	}
}
