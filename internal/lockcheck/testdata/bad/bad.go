// Package bad holds the cases the lock check must find (comment "want")
// and must let pass (comment "fine"). It is never built into anything.
package bad

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type state struct {
	mu   sync.Mutex
	rw   sync.RWMutex
	nc   *nats.Conn
	kv   jetstream.KeyValue
	msgs []*nats.Msg
	s    sender
	on   bool
}

// want: lock with a deferred unlock, a publish under it.
func deferred(s *state) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.nc.Publish("a", nil)
}

// want: an ack in a branch of the locked region.
func inBranch(s *state) {
	s.mu.Lock()
	if len(s.msgs) > 0 {
		_ = s.msgs[0].Ack()
	}
	s.mu.Unlock()
}

// want: a lock taken at the end of a loop's body is held at its start.
func loop(s *state) {
	for range 3 {
		_ = s.nc.Flush()
		s.mu.Lock()
	}
	s.mu.Unlock()
}

// want: a function of the package that does network I/O.
func throughHelper(s *state) {
	s.mu.Lock()
	send(s.nc)
	s.mu.Unlock()
}

func send(nc *nats.Conn) { _ = nc.Publish("a", nil) }

type sender interface{ send() }

type natsSender struct{ nc *nats.Conn }

func (n natsSender) send() { send(n.nc) }

// want: an interface method one of the package's types does on the network.
func viaInterface(s *state) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.s.send()
}

// want: a read lock counts too; KV through its interface.
func rlocked(ctx context.Context, s *state) {
	s.rw.RLock()
	_, _ = s.kv.Put(ctx, "k", nil)
	s.rw.RUnlock()
}

// want: a function literal is checked on its own.
func literal(s *state) func() {
	return func() {
		s.mu.Lock()
		_ = s.nc.Publish("a", nil)
		s.mu.Unlock()
	}
}

// fine: copy under the lock, I/O after.
func copied(s *state) {
	s.mu.Lock()
	msgs := s.msgs
	s.msgs = nil
	s.mu.Unlock()
	for _, m := range msgs {
		_ = m.Ack()
	}
}

// fine: the branch that unlocks returns; the I/O follows the unlock.
func early(s *state) {
	s.mu.Lock()
	if !s.on {
		s.mu.Unlock()
		_ = s.nc.Publish("off", nil)
		return
	}
	s.on = false
	s.mu.Unlock()
	_ = s.nc.Publish("on", nil)
}

// fine: a goroutine started under the lock runs without it; headers are
// local.
func started(s *state, m *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = m.Header.Get("Status")
	go send(s.nc)
}

// want: waiting under the lock for goroutines that do network I/O.
func waited(s *state) {
	var wg sync.WaitGroup
	s.mu.Lock()
	wg.Go(func() { send(s.nc) })
	wg.Wait()
	s.mu.Unlock()
}
