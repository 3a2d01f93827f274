package orderlytest

import (
	"sync"
	"time"
)

// Clock is a test clock: real time plus an offset that only Advance changes.
// It starts at the real time and runs with it, so timestamps keep their
// order; Advance jumps it forward. It is safe for concurrent use. Its Now
// method is what a Harness gives the worker as worker.Config.Now.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

// NewClock returns a clock at the real time.
func NewClock() *Clock { return &Clock{} }

// Now returns the clock's time: time.Now() plus every Advance so far.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// Advance moves the clock forward by d. It panics if d is negative: a
// clock that goes back would arm timers in the past.
func (c *Clock) Advance(d time.Duration) {
	if d < 0 {
		panic("orderlytest: Clock.Advance with a negative duration")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}
