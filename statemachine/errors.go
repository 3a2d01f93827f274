package statemachine

import (
	"errors"
	"fmt"

	"github.com/orderly-dev/orderly/contract"
)

// codedError is the type of the sentinels, so that Code finds their code with
// errors.As in the same pass as the typed errors.
type codedError struct{ code, msg string }

func (e *codedError) Error() string { return e.msg }
func (e *codedError) Code() string  { return e.code }

// Sentinel errors returned (wrapped) by Apply. Match them with errors.Is.
var (
	// ErrUnknownEvent: the event is not declared by the definition.
	ErrUnknownEvent error = &codedError{contract.CodeUnknownEvent, "unknown event"}
	// ErrInternalEvent: a client sent an event only actions and timers may send.
	ErrInternalEvent error = &codedError{contract.CodeInternalEvent, "internal event sent by a client"}
	// ErrInvalidData: a transition's Update refused the event's payload.
	ErrInvalidData error = &codedError{contract.CodeInvalidData, "invalid event data"}
	// ErrUnknownState: the current state is not declared by the definition,
	// typically stored state written by another version of the workflow.
	ErrUnknownState error = &codedError{contract.CodeUnknownState, "unknown state"}
)

// InvalidTransitionError reports an event the definition does not accept in
// the current state, including any event in a terminal state.
type InvalidTransitionError struct {
	From  State // The state the event arrived in.
	Event Event // The event no transition accepts there.
}

// Error says which event was refused in which state.
func (e *InvalidTransitionError) Error() string {
	return fmt.Sprintf("invalid transition: event %q in state %q", e.Event, e.From)
}

// Code returns contract.CodeInvalidTransition.
func (e *InvalidTransitionError) Code() string { return contract.CodeInvalidTransition }

// GuardError reports that transitions exist for (From, Event) but every guard
// refused; Reasons holds each guard's refusal in definition order.
type GuardError struct {
	From    State   // The state the event was refused in.
	Event   Event   // The refused event.
	Reasons []error // Each guard's refusal, in definition order.
}

// Error lists the guards' reasons.
func (e *GuardError) Error() string {
	return fmt.Sprintf("guard refused: event %q in state %q: %v", e.Event, e.From, errors.Join(e.Reasons...))
}

// Unwrap exposes the reasons to errors.Is and errors.As.
func (e *GuardError) Unwrap() []error { return e.Reasons }

// Code returns contract.CodeGuardRefused.
func (e *GuardError) Code() string { return contract.CodeGuardRefused }

// ValidationError lists every problem New found in a definition.
type ValidationError struct {
	Workflow string   // The definition's name.
	Problems []string // Every problem found, one sentence each.
}

// Error lists every problem, one a line.
func (e *ValidationError) Error() string {
	s := fmt.Sprintf("statemachine: invalid definition %q: %d problem(s)", e.Workflow, len(e.Problems))
	for _, p := range e.Problems {
		s += "\n  - " + p
	}
	return s
}

// Code returns the stable code of an error returned by Apply, for status
// messages: contract.CodeInvalidTransition, CodeGuardRefused,
// CodeUnknownEvent, CodeInternalEvent, CodeInvalidData or CodeUnknownState;
// "" for nil, and "internal" for an error Apply did not return (Apply returns
// no other, so no status carries it). The outermost coded error wins, so an
// Update error that happens to wrap another coded error still reports
// invalid_data.
func Code(err error) string {
	if err == nil {
		return ""
	}
	var c interface{ Code() string }
	if errors.As(err, &c) {
		return c.Code()
	}
	return "internal"
}
