package statemachine

import (
	"fmt"
	"time"

	"github.com/orderly-dev/orderly/contract"
)

// validate returns every problem of def, in a stable order, rather than
// stopping at the first: fixing a definition one error per run is tedious.
func validate[D any](def Definition[D]) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if err := contract.ValidateWorkflow(def.Name); err != nil {
		add("%v (the name is a subject token and part of stream and bucket names)", err)
	}
	states := make(map[State]StateDef)
	for i, s := range def.States {
		switch _, dup := states[s.Name]; {
		case s.Name == "":
			add("state %d has an empty name", i)
		case dup:
			add("duplicate state %q", s.Name)
		default:
			states[s.Name] = s
		}
		if s.Name != "" {
			if err := contract.ValidateStateName(string(s.Name)); err != nil {
				add("state %d: %v (state names are tokens of the inventory's subjects)", i, err)
			}
		}
	}
	if _, ok := states[def.Initial]; !ok {
		add("initial state %q is not defined", def.Initial)
	}
	events := make(map[Event]EventDef)
	for i, e := range def.Events {
		switch _, dup := events[e.Name]; {
		case e.Name == "":
			add("event %d has an empty name", i)
		case dup:
			add("duplicate event %q", e.Name)
		default:
			events[e.Name] = e
		}
	}
	actions := make(map[string]bool)
	for i, a := range def.Actions {
		switch {
		case a.Name == "":
			add("action %d has an empty name", i)
		case actions[a.Name]:
			add("duplicate action %q", a.Name)
		default:
			actions[a.Name] = true
		}
	}

	accepts := make(map[stateEvent]bool)
	acceptedAnywhere := make(map[Event]bool)
	unguarded := make(map[stateEvent]int) // first unguarded transition of each (From, On)
	leaves := make(map[State]bool)        // has a transition to another state
	next := make(map[State][]State)
	startedIn := make(map[string][]State) // action -> states it is started into
	for i, t := range def.Transitions {
		name := fmt.Sprintf("transition %d (%s --%s--> %s)", i, t.From, t.On, t.To)
		if from, ok := states[t.From]; !ok {
			add("%s: from state %q is not defined", name, t.From)
		} else if from.Terminal {
			add("%s: terminal state %q has an outgoing transition", name, t.From)
		}
		if _, ok := states[t.To]; !ok {
			add("%s: to state %q is not defined", name, t.To)
		}
		if _, ok := events[t.On]; !ok {
			add("%s: event %q is not declared", name, t.On)
		}
		for _, a := range t.Actions {
			if !actions[a] {
				add("%s: action %q is not declared", name, a)
			}
			startedIn[a] = append(startedIn[a], t.To)
		}
		k := stateEvent{t.From, t.On}
		if j, ok := unguarded[k]; ok {
			add("%s can never fire: transition %d on the same state and event has no guard", name, j)
		} else if t.Guard == nil {
			unguarded[k] = i
		}
		accepts[k] = true
		acceptedAnywhere[t.On] = true
		if t.To != t.From {
			leaves[t.From] = true
		}
		next[t.From] = append(next[t.From], t.To)
	}

	// internal checks an event the runtime feeds back; it reports whether the
	// event is at least a declared internal event.
	internal := func(what string, e Event) bool {
		d, ok := events[e]
		switch {
		case e == "":
			add("%s: event is empty", what)
		case !ok:
			add("%s: event %q is not declared", what, e)
		case d.Client:
			add("%s: event %q is a client event; it must be internal so clients cannot forge it", what, e)
		}
		return ok && !d.Client
	}
	for _, a := range def.Actions {
		for _, o := range []struct {
			field string
			e     Event
		}{{"OnSuccess", a.OnSuccess}, {"OnFailure", a.OnFailure}} {
			what := fmt.Sprintf("action %q %s", a.Name, o.field)
			if !internal(what, o.e) {
				continue
			}
			if !acceptedAnywhere[o.e] {
				add("%s: event %q is accepted by no transition", what, o.e)
				continue
			}
			// The outcome must be accepted where the action leaves the
			// machine, or it would always be rejected.
			seen := make(map[State]bool)
			for _, s := range startedIn[a.Name] {
				if !seen[s] && !accepts[stateEvent{s, o.e}] {
					add("%s: event %q is not accepted in state %q, where the action is started", what, o.e, s)
				}
				seen[s] = true
			}
		}
	}
	for _, s := range def.States {
		if s.Timeout == nil {
			continue
		}
		what := fmt.Sprintf("state %q timeout", s.Name)
		if s.Timeout.After <= 0 {
			add("%s: After must be positive, got %v", what, s.Timeout.After)
		}
		if internal(what, s.Timeout.Event) && !accepts[stateEvent{s.Name, s.Timeout.Event}] {
			add("%s: event %q is accepted by no transition from that state", what, s.Timeout.Event)
		}
	}
	for _, s := range def.States {
		periodic := make(map[Event]bool)
		for i, p := range s.Every {
			what := fmt.Sprintf("state %q periodic event %d", s.Name, i)
			switch {
			case p.Interval <= 0:
				add("%s: Interval must be positive, got %v", what, p.Interval)
			case p.Interval < time.Second || p.Interval%time.Second != 0:
				add("%s: Interval %v is not a whole number of seconds: the broker schedules periodic events at whole seconds", what, p.Interval)
			}
			if !internal(what, p.Event) {
				continue
			}
			if !accepts[stateEvent{s.Name, p.Event}] {
				add("%s: event %q is accepted by no transition from that state", what, p.Event)
			}
			if periodic[p.Event] {
				add("%s: event %q is periodic in that state already", what, p.Event)
			}
			periodic[p.Event] = true
		}
	}

	reached := map[State]bool{def.Initial: true}
	reported := make(map[State]bool)
	for queue := []State{def.Initial}; len(queue) > 0; queue = queue[1:] {
		for _, to := range next[queue[0]] {
			if !reached[to] {
				reached[to] = true
				queue = append(queue, to)
			}
		}
	}
	_, initialOK := states[def.Initial]
	for _, s := range def.States {
		if s.Name == "" || reported[s.Name] {
			continue
		}
		reported[s.Name] = true
		// With no initial state every state is unreachable; saying so adds noise.
		if initialOK && !reached[s.Name] {
			add("state %q is unreachable from the initial state %q", s.Name, def.Initial)
		}
		if !s.Terminal && !leaves[s.Name] && s.Timeout == nil {
			add("non-terminal state %q has no way out: no transition to another state and no timeout", s.Name)
		}
	}
	return problems
}
