package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/statemachine"
)

// ActionFunc does one action's slow work (a call to a payment gateway, say)
// after the transition that started it was committed and acknowledged. Its
// result, encoded as JSON, is the data of the action's success event; an
// error is retried with backoff (see Config.ActionRetries) unless it is
// Permanent, and then feeds back the action's failure event.
//
// It must be idempotent on call.IdempotencyKey: after a crash the same call
// may run again.
type ActionFunc[D any] func(ctx context.Context, call ActionCall[D]) (result any, err error)

// ActionCall is one run of an action.
type ActionCall[D any] struct {
	// Workflow, Key and Action say what is being done for whom.
	Workflow, Key, Action string
	// JobID is the job whose event started the action.
	JobID string
	// IdempotencyKey is stable across retries and restarts: key, version and
	// action. Pass it on to the remote service.
	IdempotencyKey string
	// Attempt counts from 1.
	Attempt int
	// Data is the key's data as committed with the transition.
	Data D
}

// Permanent marks err as not worth retrying: the action fails at once.
func Permanent(err error) error { return &permanentError{err} }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// RetryAfter asks for the action to be retried after d (counting as an
// attempt), instead of the default backoff; d <= 0 retries at once. The
// error unwraps to err; Permanent(err) inside still fails the action at once.
func RetryAfter(d time.Duration, err error) error { return &retryAfterError{d, err} }

type retryAfterError struct {
	d   time.Duration
	err error
}

func (e *retryAfterError) Error() string { return fmt.Sprintf("retry after %s: %v", e.d, e.err) }
func (e *retryAfterError) Unwrap() error { return e.err }

// Workflow is a state machine with the functions that do its actions, ready
// to be run by a Worker. Build one with NewWorkflow.
type Workflow struct{ e engine }

// Name is the workflow's name.
func (w Workflow) Name() string { return w.e.name() }

// NewWorkflow pairs a machine with its actions. Every action the machine
// names needs a function, and every function a declared action.
func NewWorkflow[D any](m *statemachine.Machine[D], actions map[string]ActionFunc[D]) (Workflow, error) {
	var problems []error
	for _, a := range m.Actions() {
		if actions[a.Name] == nil {
			problems = append(problems, fmt.Errorf("action %q has no function", a.Name))
		}
	}
	for name := range actions {
		if _, ok := m.Action(name); !ok {
			problems = append(problems, fmt.Errorf("function for undeclared action %q", name))
		}
	}
	if err := errors.Join(problems...); err != nil {
		return Workflow{}, fmt.Errorf("worker: workflow %s: %w", m.Name(), err)
	}
	return Workflow{e: &typed[D]{m: m, actions: actions}}, nil
}

// engine is a workflow with its data type erased, so the runtime needs no
// type parameters.
type engine interface {
	name() string
	initial() statemachine.State
	hasEvent(statemachine.Event) bool
	isClient(statemachine.Event) bool
	stateTimeout(statemachine.State) *statemachine.Timeout
	statePeriodic(statemachine.State) []statemachine.Periodic
	action(name string) (statemachine.ActionDef, bool)
	newEntity(data json.RawMessage) (entity, error)
	// info describes the workflow for the workflows bucket.
	info() contract.WorkflowInfo
}

// entity holds one key's data in its typed form between events.
type entity interface {
	apply(from statemachine.State, in statemachine.Input) (outcome, error)
	encode() (json.RawMessage, error)
	// snapshot copies the entity as it is now, for an action to read while
	// the actor moves on.
	snapshot() entity
	runAction(ctx context.Context, call actionCall) (json.RawMessage, error)
}

// outcome is the part of a statemachine.Step the runtime needs.
type outcome struct {
	to      statemachine.State
	actions []statemachine.ActionDef
	arm     *statemachine.Timeout
	cancel  bool
}

type actionCall struct {
	workflow, key, action, jobID, idempotencyKey string
	attempt                                      int
}

type typed[D any] struct {
	m       *statemachine.Machine[D]
	actions map[string]ActionFunc[D]
}

func (t *typed[D]) name() string                       { return t.m.Name() }
func (t *typed[D]) initial() statemachine.State        { return t.m.Initial() }
func (t *typed[D]) hasEvent(e statemachine.Event) bool { return t.m.HasEvent(e) }
func (t *typed[D]) isClient(e statemachine.Event) bool { return t.m.IsClientEvent(e) }
func (t *typed[D]) stateTimeout(s statemachine.State) *statemachine.Timeout {
	def, _ := t.m.State(s)
	return def.Timeout
}

func (t *typed[D]) statePeriodic(s statemachine.State) []statemachine.Periodic {
	def, _ := t.m.State(s)
	return def.Every
}

func (t *typed[D]) action(name string) (statemachine.ActionDef, bool) { return t.m.Action(name) }

func (t *typed[D]) info() contract.WorkflowInfo {
	info := contract.WorkflowInfo{
		Name: t.m.Name(), Initial: string(t.m.Initial()), Mermaid: t.m.Mermaid(),
		States: []contract.WorkflowState{}, Events: []contract.WorkflowEvent{}, Actions: []string{},
	}
	for _, s := range t.m.States() {
		info.States = append(info.States, contract.WorkflowState{Name: string(s.Name), Terminal: s.Terminal})
	}
	for _, e := range t.m.Events() {
		info.Events = append(info.Events, contract.WorkflowEvent{Name: string(e.Name), Client: e.Client})
	}
	for _, a := range t.m.Actions() {
		info.Actions = append(info.Actions, a.Name)
	}
	return info
}

func (t *typed[D]) newEntity(data json.RawMessage) (entity, error) {
	e := &typedEntity[D]{t: t}
	if len(data) > 0 && string(data) != "null" {
		if err := json.Unmarshal(data, &e.data); err != nil {
			return nil, fmt.Errorf("decode data: %w", err)
		}
	}
	return e, nil
}

type typedEntity[D any] struct {
	t    *typed[D]
	data D
}

func (e *typedEntity[D]) apply(from statemachine.State, in statemachine.Input) (_ outcome, err error) {
	defer recoverInto(&err, "transition on "+string(in.Event))
	step, err := e.t.m.Apply(from, e.data, in)
	if err != nil {
		return outcome{}, err
	}
	e.data = step.Data
	return outcome{to: step.To, actions: step.Actions, arm: step.Arm, cancel: step.Cancel}, nil
}

func (e *typedEntity[D]) encode() (json.RawMessage, error) { return json.Marshal(e.data) }

func (e *typedEntity[D]) snapshot() entity { c := *e; return &c }

func (e *typedEntity[D]) runAction(ctx context.Context, c actionCall) (_ json.RawMessage, err error) {
	defer func() {
		if _, ok := err.(*PanicError); ok {
			err = Permanent(err) // no retry cures a bug
		}
	}()
	defer recoverInto(&err, "action "+c.action)
	fn := e.t.actions[c.action]
	if fn == nil {
		return nil, Permanent(fmt.Errorf("no function for action %q", c.action))
	}
	res, err := fn(ctx, ActionCall[D]{
		Workflow: c.workflow, Key: c.key, Action: c.action, JobID: c.jobID,
		IdempotencyKey: c.idempotencyKey, Attempt: c.attempt, Data: e.data,
	})
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, nil
	}
	b, err := json.Marshal(res)
	if err != nil {
		return nil, Permanent(fmt.Errorf("encode result of %s: %w", c.action, err))
	}
	return b, nil
}

// PanicError is a panic of a workflow's own code (a transition's update or
// guard, an action), recovered so that one bad event cannot take the worker
// down, and every replica the partition moves to after it.
type PanicError struct {
	Where string // "transition on EVENT" or "action NAME"
	Value any    // what was passed to panic
	Stack []byte // the panicking goroutine's stack
}

// Error says where the panic was and what it was.
func (e *PanicError) Error() string { return fmt.Sprintf("%s panicked: %v", e.Where, e.Value) }

// Code makes statemachine.Code of a panic contract.CodePanicked.
func (e *PanicError) Code() string { return contract.CodePanicked }

// recoverInto turns a panic of the caller into a *PanicError in *err. It
// must be called directly by a deferred function.
func recoverInto(err *error, where string) {
	if v := recover(); v != nil {
		*err = &PanicError{Where: where, Value: v, Stack: debug.Stack()}
	}
}
