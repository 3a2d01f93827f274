// Package ratelog keeps a failure that repeats from flooding the log: the
// first occurrence is logged, then at most one line per interval, carrying
// the number of occurrences held back since the last line.
package ratelog

import (
	"sync"
	"time"
)

// Limiter lets one log line through per interval. The zero value lets
// every line through; it is safe for concurrent use.
type Limiter struct {
	// Every is the least time between two lines.
	Every time.Duration

	mu   sync.Mutex
	last time.Time
	held int
}

// Allow reports whether a line may be logged at now and, when it may, how
// many occurrences were held back since the last line.
func (l *Limiter) Allow(now time.Time) (ok bool, held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < l.Every {
		l.held++
		return false, 0
	}
	held, l.held, l.last = l.held, 0, now
	return true, held
}

// Reset ends a streak: the next occurrence is logged at once. It returns
// the occurrences held back since the last line, so that the caller can
// report them.
func (l *Limiter) Reset() (held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	held, l.held, l.last = l.held, 0, time.Time{}
	return held
}
