package statemachine_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/orderly-dev/orderly/statemachine"
)

// door is a small machine: a door that can be locked, and that an alarm
// treats as forgotten when left open for a minute.
func door() *statemachine.Machine[struct{}] {
	type T = statemachine.Transition[struct{}]
	return statemachine.MustNew(statemachine.Definition[struct{}]{
		Name:    "door",
		Initial: "closed",
		States: []statemachine.StateDef{
			{Name: "closed"},
			{Name: "open", Timeout: &statemachine.Timeout{After: time.Minute, Event: "left_open"}},
			{Name: "locked"},
			{Name: "alarmed", Terminal: true},
		},
		Events: []statemachine.EventDef{
			{Name: "open", Client: true},
			{Name: "close", Client: true},
			{Name: "lock", Client: true},
			{Name: "unlock", Client: true},
			{Name: "left_open"},
		},
		Transitions: []T{
			{From: "closed", On: "open", To: "open"},
			{From: "open", On: "close", To: "closed"},
			{From: "open", On: "left_open", To: "alarmed"},
			{From: "closed", On: "lock", To: "locked"},
			{From: "locked", On: "unlock", To: "closed"},
		},
	})
}

func ExampleMachine_Mermaid() {
	fmt.Print(door().Mermaid())
	// Output:
	// stateDiagram-v2
	//     [*] --> closed
	//     closed --> open: open
	//     open --> closed: close
	//     open --> alarmed: left_open (after 1m0s)
	//     closed --> locked: lock
	//     locked --> closed: unlock
	//     alarmed --> [*]
}

func ExampleMachine_Apply() {
	m := door()

	step, err := m.Apply("closed", struct{}{}, statemachine.Input{Event: "open"})
	fmt.Println(step.From, "->", step.To, "arm:", step.Arm.After, err)

	// A locked door cannot be opened: the caller keeps the state it had and
	// reports the typed error.
	_, err = m.Apply("locked", struct{}{}, statemachine.Input{Event: "open"})
	var invalid *statemachine.InvalidTransitionError
	if errors.As(err, &invalid) {
		fmt.Println(invalid.From, invalid.Event, statemachine.Code(err))
	}
	fmt.Println(err)

	// Clients cannot forge the timeout.
	_, err = m.Apply("open", struct{}{}, statemachine.Input{Event: "left_open", Source: statemachine.SourceClient})
	fmt.Println(statemachine.Code(err), errors.Is(err, statemachine.ErrInternalEvent))
	// Output:
	// closed -> open arm: 1m0s <nil>
	// locked open invalid_transition
	// invalid transition: event "open" in state "locked"
	// internal_event true
}
