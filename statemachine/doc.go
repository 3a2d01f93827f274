// Package statemachine holds Orderly's workflow definitions: states, events,
// transitions with optional guards and data updates, actions to start after a
// transition, and per-state timeouts. It does no I/O; the worker package runs
// machines, this one only decides.
//
// The lesson it takes from the seed's OrderProcessor is that a state machine
// is safest when every transition is a pure function of (state, data, event)
// and every other combination is an explicit error. Apply never sends, sleeps
// or logs: it returns the Step to commit, or a typed error (an
// *InvalidTransitionError for a pair the table does not list) that leaves the
// state and data as they were, so the caller can report the rejection instead
// of dropping it.
//
// A Definition is validated once by New, which reports every problem it finds
// at once rather than the first. The resulting Machine is immutable, safe for
// concurrent use, and its hot path allocates nothing, because the runtime calls
// it for every event of every key. Mermaid and DOT render the same definition,
// so a diagram cannot drift from the code.
//
// Slow work is never done inside a transition. A transition names actions;
// the runtime starts them after it has committed the new state, and feeds
// their outcome back as internal events (an ActionDef's OnSuccess and
// OnFailure). Only events declared Client may come from outside.
package statemachine
