package orderlytest

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/worker"
)

// Spy wraps an action function and records every call, so a test can
// assert that an action ran, how often and with what inputs. Put its Func in
// the actions map given to worker.NewWorkflow:
//
//	spy := orderlytest.NewSpy(notify)
//	wf, err := worker.NewWorkflow(machine, map[string]worker.ActionFunc[Doc]{"notify": spy.Func})
//
// A Spy is safe for concurrent use.
type Spy[D any] struct {
	fn worker.ActionFunc[D]

	mu      sync.Mutex
	calls   []worker.ActionCall[D]
	changed chan struct{} // closed and replaced on every call
}

// NewSpy returns a spy that records each call and then calls fn. A nil fn
// succeeds with no result.
func NewSpy[D any](fn worker.ActionFunc[D]) *Spy[D] {
	return &Spy[D]{fn: fn, changed: make(chan struct{})}
}

// Func is the spied action: it records call, then runs the wrapped function.
// Each attempt of an action is one call.
func (s *Spy[D]) Func(ctx context.Context, call worker.ActionCall[D]) (any, error) {
	s.mu.Lock()
	s.calls = append(s.calls, call)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	if s.fn == nil {
		return nil, nil
	}
	return s.fn(ctx, call)
}

// Calls returns the calls so far, oldest first.
func (s *Spy[D]) Calls() []worker.ActionCall[D] {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// RequireCalled waits up to DefaultTimeout for n calls and returns them. It
// fails the test if fewer came in time, or if more than n came.
func (s *Spy[D]) RequireCalled(t testing.TB, n int) []worker.ActionCall[D] {
	t.Helper()
	deadline := time.NewTimer(DefaultTimeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		calls, changed := slices.Clone(s.calls), s.changed
		s.mu.Unlock()
		switch {
		case len(calls) > n:
			t.Fatalf("orderlytest: action called %d times, want %d: %+v", len(calls), n, calls)
		case len(calls) == n:
			return calls
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("orderlytest: action called %d times within %s, want %d: %+v", len(calls), DefaultTimeout, n, calls)
		}
	}
}
