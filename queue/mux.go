package queue

import (
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// replyMux sends requests whose replies are awaited later, many at once,
// without a goroutine, a subscription or a timer each: one reply
// subscription per connection, made on first use, and a token per request.
// The job id claims of a batch and PublishAsync's look-ups go through it;
// jetstream's asynchronous publish did the same work with a timer and more
// bookkeeping per message, and cost twice the state commit's CPU.
//
// A request unanswered after its deadline (its answer lost with the
// connection) is given up on by a later send, so that what is pending stays
// bounded by the rate of requests.
type replyMux struct {
	once   sync.Once
	err    error
	prefix string // reply subject prefix, "<inbox>."

	mu      sync.Mutex
	next    uint64
	pending map[string]muxWaiter
	order   []muxDeadline // oldest first
}

// muxWaiter is where a reply goes: to ch, tagged with i.
type muxWaiter struct {
	ch chan<- muxReply
	i  int
}

type muxReply struct {
	i   int
	msg *nats.Msg // nil: given up on (deadline passed)
}

type muxDeadline struct {
	token string
	at    time.Time
}

func (r *replyMux) start(nc *nats.Conn) error {
	r.once.Do(func() {
		r.prefix = nc.NewInbox() + "."
		r.pending = map[string]muxWaiter{}
		_, r.err = nc.Subscribe(r.prefix+"*", func(m *nats.Msg) {
			token := m.Subject[len(r.prefix):]
			r.mu.Lock()
			w, ok := r.pending[token]
			delete(r.pending, token)
			r.mu.Unlock()
			if ok {
				w.ch <- muxReply{w.i, m}
			}
		})
	})
	return r.err
}

// send publishes m with a reply subject of its own; its reply (or, after
// timeout, a muxReply with no message) goes to ch, tagged with i. ch must
// have room for every reply it is given, since the subscription's one
// goroutine delivers them all.
func (r *replyMux) send(nc *nats.Conn, m *nats.Msg, ch chan<- muxReply, i int, timeout time.Duration) (token string, err error) {
	if err := r.start(nc); err != nil {
		return "", err
	}
	now := time.Now()
	r.mu.Lock()
	for len(r.order) > 0 {
		d := r.order[0]
		w, ok := r.pending[d.token]
		if ok && now.Before(d.at) {
			break
		}
		if ok {
			delete(r.pending, d.token)
			w.ch <- muxReply{w.i, nil}
		}
		r.order = r.order[1:]
	}
	r.next++
	token = strconv.FormatUint(r.next, 36)
	r.pending[token] = muxWaiter{ch, i}
	r.order = append(r.order, muxDeadline{token, now.Add(timeout)})
	r.mu.Unlock()
	m.Reply = r.prefix + token
	if err := nc.PublishMsg(m); err != nil {
		r.forget(token)
		return "", err
	}
	return token, nil
}

// forget stops waiting for token's reply.
func (r *replyMux) forget(token string) {
	r.mu.Lock()
	delete(r.pending, token)
	r.mu.Unlock()
}

// noResponders reports whether a reply is the server's "no responders".
func noResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") == "503"
}
