package statemachine

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// State names a state of a workflow.
type State string

// String returns the state name.
func (s State) String() string { return string(s) }

// Event names an event of a workflow.
type Event string

// String returns the event name.
func (e Event) String() string { return string(e) }

// Source says where an event came from. Clients may only send events declared
// Client; action outcomes, timeouts and periodic events come from the runtime
// itself.
type Source uint8

// Sources of events.
const (
	SourceClient Source = iota // published by another service or enqueue
	SourceAction               // the outcome of an action, fed back by the runtime
	SourceTimer                // a state's timeout or periodic event fired
)

// Input is one event to apply.
type Input struct {
	Event  Event           // The event's name.
	Data   json.RawMessage // the event's payload; may be nil
	Source Source          // Who sent it: a client, an action's outcome or a timer.
}

// StateDef declares a state.
type StateDef struct {
	Name     State    // The state's name, as stored and published.
	Terminal bool     // no event is accepted once here
	Timeout  *Timeout // optional; nil means the state may be held forever
	// Every lists the state's periodic events, optional: see Periodic.
	Every []Periodic
}

// Timeout fires Event after the machine has stayed After in a state. Entering
// the state from another one starts it; a self-loop does not restart it.
type Timeout struct {
	After time.Duration // How long after entering the state the event fires.
	Event Event         // an internal event accepted by a transition from the state
}

// Periodic delivers Event to a key every Interval while the key is in the
// state that declares it (the seed's Process.send_after, re-sent each time).
// The cadence is measured from when the key entered the state and is not
// reset by other events, self-loops included; leaving the state stops it and
// entering it again starts a new cadence. Ticks missed while no worker ran
// collapse into one. Build one with Every.
type Periodic struct {
	// Interval between two deliveries: at least a second and a whole number
	// of seconds, since the broker schedules them at whole seconds.
	Interval time.Duration
	Event    Event // an internal event accepted by a transition from the state
}

// Every returns a periodic event for StateDef.Every: event is delivered every
// interval while a key is in the state.
func Every(interval time.Duration, event Event) Periodic {
	return Periodic{Interval: interval, Event: event}
}

// EventDef declares an event.
type EventDef struct {
	Name   Event // The event's name, as it appears on the wire.
	Client bool  // true: clients may send it; false: internal (action outcome, timeout)
}

// ActionDef declares slow work that a transition starts once it is committed.
// Its outcome comes back as an internal event so that it, too, goes through
// the transition table. Both events are required.
type ActionDef struct {
	Name      string // The action's name, as transitions list it.
	OnSuccess Event  // fed back with the action's result as Data
	OnFailure Event  // fed back when the action fails for good, Data {"error":"..."}
}

// Transition moves the machine from From to To on event On.
//
// Several transitions may share (From, On) with different guards: the first,
// in definition order, whose guard passes is taken. Guard and Update must be
// pure: the runtime may call them again when it replays events.
type Transition[D any] struct {
	From State // The state the transition leaves.
	On   Event // The event that triggers it.
	To   State // The state it enters (may equal From).
	// Guard, optional: nil allows the transition; a non-nil error is the
	// reason it is refused.
	Guard func(data D, in Input) error
	// Update, optional: returns the new data, typically in.Data decoded into
	// it. An error rejects the event with ErrInvalidData and changes nothing.
	Update func(data D, in Input) (D, error)
	// Actions names ActionDefs to start once the transition is committed.
	Actions []string
}

// Definition describes a workflow. D is the data the workflow carries with
// its state; it must be JSON-serialisable for the runtime to store it.
type Definition[D any] struct {
	Name        string          // workflow name: 1-64 characters of a-z 0-9 - _ (contract.ValidateWorkflow)
	Initial     State           // The state a new key starts in.
	States      []StateDef      // Every state, in the order diagrams list them.
	Events      []EventDef      // Every event, client and internal.
	Transitions []Transition[D] // The transition table; order matters among guarded alternatives.
	Actions     []ActionDef     // The slow work transitions may start.
}

type stateEvent struct {
	s State
	e Event
}

// span is a range of Machine.trans holding the transitions of one (state, event).
type span struct{ lo, hi int }

type compiled[D any] struct {
	Transition[D]
	actions []ActionDef // resolved from Transition.Actions
	arm     *Timeout
	cancel  bool
}

// Machine is a validated, immutable definition, safe for concurrent use.
type Machine[D any] struct {
	name    string
	initial State
	states  []StateDef
	events  []EventDef
	actions []ActionDef
	trans   []compiled[D] // in definition order, grouped by index
	order   []int         // trans positions in definition order, for diagrams
	index   map[stateEvent]span
	stateAt map[State]int
	eventAt map[Event]int
	actAt   map[string]int
}

// New validates def and returns its machine. On failure the error is a
// *ValidationError listing every problem, so a broken definition is fixed in
// one pass.
func New[D any](def Definition[D]) (*Machine[D], error) {
	if problems := validate(def); len(problems) > 0 {
		return nil, &ValidationError{Workflow: def.Name, Problems: problems}
	}
	m := &Machine[D]{
		name:    def.Name,
		initial: def.Initial,
		states:  make([]StateDef, len(def.States)),
		events:  append([]EventDef(nil), def.Events...),
		actions: append([]ActionDef(nil), def.Actions...),
		index:   make(map[stateEvent]span),
		stateAt: make(map[State]int, len(def.States)),
		eventAt: make(map[Event]int, len(def.Events)),
		actAt:   make(map[string]int, len(def.Actions)),
	}
	// Copy timeouts and periodic events so the caller cannot change a
	// validated machine.
	for i, s := range def.States {
		if s.Timeout != nil {
			t := *s.Timeout
			s.Timeout = &t
		}
		s.Every = slices.Clone(s.Every)
		m.states[i] = s
		m.stateAt[s.Name] = i
	}
	for i, e := range m.events {
		m.eventAt[e.Name] = i
	}
	for i, a := range m.actions {
		m.actAt[a.Name] = i
	}

	// Group transitions by (From, On), keeping definition order inside a
	// group, so that Apply scans one contiguous range.
	groups := make(map[stateEvent][]int)
	var keys []stateEvent
	for i, t := range def.Transitions {
		k := stateEvent{t.From, t.On}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], i)
	}
	m.order = make([]int, len(def.Transitions))
	for _, k := range keys {
		sp := span{lo: len(m.trans)}
		for _, i := range groups[k] {
			t := def.Transitions[i]
			t.Actions = append([]string(nil), t.Actions...)
			c := compiled[D]{Transition: t}
			for _, name := range t.Actions {
				c.actions = append(c.actions, m.actions[m.actAt[name]])
			}
			if t.To != t.From {
				c.arm = m.states[m.stateAt[t.To]].Timeout
				c.cancel = m.states[m.stateAt[t.From]].Timeout != nil
			}
			m.order[i] = len(m.trans)
			m.trans = append(m.trans, c)
		}
		sp.hi = len(m.trans)
		m.index[k] = sp
	}
	return m, nil
}

// MustNew is New for definitions fixed at compile time, such as package-level
// reference workflows; it panics if def is invalid.
func MustNew[D any](def Definition[D]) *Machine[D] {
	m, err := New(def)
	if err != nil {
		panic(err)
	}
	return m
}

// Name returns the workflow name.
func (m *Machine[D]) Name() string { return m.name }

// Initial returns the state of a key that has never seen an event.
func (m *Machine[D]) Initial() State { return m.initial }

// States returns the states in definition order. The slice is a copy; the
// Timeouts and Every slices it points to are the machine's own and must not
// be modified.
func (m *Machine[D]) States() []StateDef { return append([]StateDef(nil), m.states...) }

// Events returns the events in definition order, as a copy.
func (m *Machine[D]) Events() []EventDef { return append([]EventDef(nil), m.events...) }

// Actions returns the actions in definition order, as a copy.
func (m *Machine[D]) Actions() []ActionDef { return append([]ActionDef(nil), m.actions...) }

// Action returns the action called name.
func (m *Machine[D]) Action(name string) (ActionDef, bool) {
	i, ok := m.actAt[name]
	if !ok {
		return ActionDef{}, false
	}
	return m.actions[i], true
}

// State returns the definition of s. Its Timeout and Every must not be
// modified.
func (m *Machine[D]) State(s State) (StateDef, bool) {
	i, ok := m.stateAt[s]
	if !ok {
		return StateDef{}, false
	}
	return m.states[i], true
}

// IsTerminal reports whether s is a declared terminal state.
func (m *Machine[D]) IsTerminal(s State) bool {
	i, ok := m.stateAt[s]
	return ok && m.states[i].Terminal
}

// IsClientEvent reports whether e is declared and clients may send it.
func (m *Machine[D]) IsClientEvent(e Event) bool {
	i, ok := m.eventAt[e]
	return ok && m.events[i].Client
}

// HasEvent reports whether e is declared.
func (m *Machine[D]) HasEvent(e Event) bool {
	_, ok := m.eventAt[e]
	return ok
}

// Step is the transition Apply chose, for the runtime to commit. Actions and
// Arm point into the machine's immutable definition and must not be modified.
type Step[D any] struct {
	From, To State       // The state left and the state entered (equal for a self-loop).
	Event    Event       // The event applied.
	Data     D           // the new data; the input data if the transition has no Update
	Actions  []ActionDef // to start after the step is committed
	// Arm, when non-nil, is the timeout to start: the step enters, from
	// another state, a state that has one.
	Arm *Timeout
	// Cancel reports that the step leaves a state that has a timeout for
	// another state, so any timer armed for From is stale.
	Cancel bool
}

// Apply decides what event in does to a key in state from with data. It is
// pure: on error the caller keeps from and data unchanged. Checks run in this
// order: ErrUnknownEvent, ErrInternalEvent (a client sent an internal event),
// ErrUnknownState, *InvalidTransitionError, *GuardError, ErrInvalidData.
func (m *Machine[D]) Apply(from State, data D, in Input) (Step[D], error) {
	ei, ok := m.eventAt[in.Event]
	if !ok {
		return Step[D]{}, fmt.Errorf("%w %q", ErrUnknownEvent, in.Event)
	}
	if in.Source == SourceClient && !m.events[ei].Client {
		return Step[D]{}, fmt.Errorf("%w: %q", ErrInternalEvent, in.Event)
	}
	sp, ok := m.index[stateEvent{from, in.Event}]
	if !ok {
		// Looking the state up only on a miss keeps the hot path to one map
		// access per check.
		if _, known := m.stateAt[from]; !known {
			return Step[D]{}, fmt.Errorf("%w %q", ErrUnknownState, from)
		}
		return Step[D]{}, &InvalidTransitionError{From: from, Event: in.Event}
	}
	var reasons []error
	for i := sp.lo; i < sp.hi; i++ {
		t := &m.trans[i]
		if t.Guard != nil {
			if err := t.Guard(data, in); err != nil {
				reasons = append(reasons, err)
				continue
			}
		}
		next := data
		if t.Update != nil {
			var err error
			if next, err = t.Update(data, in); err != nil {
				return Step[D]{}, fmt.Errorf("event %q in state %q: %w: %w", in.Event, from, ErrInvalidData, err)
			}
		}
		return Step[D]{
			From: from, To: t.To, Event: in.Event, Data: next,
			Actions: t.actions, Arm: t.arm, Cancel: t.cancel,
		}, nil
	}
	return Step[D]{}, &GuardError{From: from, Event: in.Event, Reasons: reasons}
}
