package jsapi

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// ReplyMux sends requests whose replies are awaited later, many at once,
// without a goroutine, a subscription or a timer each: one reply
// subscription per connection, made on first use, and a token per request.
// The worker's job id claims of a batch and the client's PublishAsync
// look-ups go through it; jetstream's asynchronous publish did the same work with a timer and more
// bookkeeping per message, and cost twice the state commit's CPU.
//
// A request unanswered after its deadline (its answer lost with the
// connection) is given up on by a later send, so that what is pending stays
// bounded by the rate of requests.
type ReplyMux struct {
	once   sync.Once
	err    error
	prefix string // reply subject prefix, "<inbox>."
	sub    *nats.Subscription

	mu      sync.Mutex
	next    uint64
	pending map[string]muxWaiter
	order   []muxDeadline // oldest first
	closed  bool
}

// muxWaiter is where a reply goes: to ch, tagged with i; or, for a request
// answered by several messages (SendFunc), to fn.
type muxWaiter struct {
	ch chan<- Reply
	i  int
	fn func(*nats.Msg) bool
}

// give hands m (nil: given up on) to w; false once w wants nothing more.
func (w muxWaiter) give(m *nats.Msg) bool {
	if w.fn != nil {
		return w.fn(m) && m != nil
	}
	w.ch <- Reply{w.i, m}
	return false
}

// Reply is the answer to a request sent with ReplyMux.Send.
type Reply struct {
	I   int       // the tag the request was sent with
	Msg *nats.Msg // nil: given up on (deadline passed, or the mux closed)
}

type muxDeadline struct {
	token string
	at    time.Time
}

func (r *ReplyMux) start(nc *nats.Conn) error {
	r.once.Do(func() {
		r.mu.Lock()
		closed := r.closed
		r.prefix = nc.NewInbox() + "."
		if r.pending == nil {
			r.pending = map[string]muxWaiter{}
		}
		r.mu.Unlock()
		if closed {
			r.err = ErrMuxClosed
			return
		}
		sub, err := nc.Subscribe(r.prefix+"*", func(m *nats.Msg) {
			token := m.Subject[len(r.prefix):]
			r.mu.Lock()
			w, ok := r.pending[token]
			if w.fn == nil {
				delete(r.pending, token)
			}
			r.mu.Unlock()
			if ok && !w.give(m) && w.fn != nil {
				r.Forget(token)
			}
		})
		r.mu.Lock()
		r.sub, r.err, closed = sub, err, r.closed
		r.mu.Unlock()
		if closed && sub != nil {
			_ = sub.Unsubscribe() // Close ran meanwhile
		}
	})
	return r.err
}

// Send publishes m with a reply subject of its own; its reply (or, after
// timeout, a Reply with no message) goes to ch, tagged with i. ch must
// have room for every reply it is given, since the subscription's one
// goroutine delivers them all. Every Send of one ReplyMux must use the same
// connection.
func (r *ReplyMux) Send(nc *nats.Conn, m *nats.Msg, ch chan<- Reply, i int, timeout time.Duration) (token string, err error) {
	return r.send(nc, m, muxWaiter{ch: ch, i: i}, timeout)
}

// SendFunc publishes m, a request answered by several messages (a batched
// direct get: the messages found, then a status), with a reply subject of
// its own, and calls fn with each reply, in order, from the reply
// subscription's goroutine, until fn returns false; or with nil once the
// request is given up on (after timeout, or the mux closed), which may
// happen while a reply is being handed to fn: fn must be safe for that,
// quick, and must not call the mux.
func (r *ReplyMux) SendFunc(nc *nats.Conn, m *nats.Msg, fn func(*nats.Msg) bool, timeout time.Duration) (token string, err error) {
	return r.send(nc, m, muxWaiter{fn: fn}, timeout)
}

func (r *ReplyMux) send(nc *nats.Conn, m *nats.Msg, w muxWaiter, timeout time.Duration) (token string, err error) {
	if err := r.start(nc); err != nil {
		return "", err
	}
	now := time.Now()
	var givenUp []muxWaiter // those of SendFunc, told outside the lock
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return "", ErrMuxClosed
	}
	for len(r.order) > 0 {
		d := r.order[0]
		old, ok := r.pending[d.token]
		if ok && now.Before(d.at) {
			break
		}
		if ok {
			delete(r.pending, d.token)
			if old.fn != nil {
				givenUp = append(givenUp, old)
			} else {
				old.give(nil)
			}
		}
		r.order = r.order[1:]
	}
	r.next++
	token = strconv.FormatUint(r.next, 36)
	r.pending[token] = w
	r.order = append(r.order, muxDeadline{token, now.Add(timeout)})
	r.mu.Unlock()
	for _, old := range givenUp {
		old.give(nil)
	}
	m.Reply = r.prefix + token
	if err := nc.PublishMsg(m); err != nil {
		r.Forget(token)
		return "", err
	}
	return token, nil
}

// Forget stops waiting for token's reply.
func (r *ReplyMux) Forget(token string) {
	r.mu.Lock()
	delete(r.pending, token)
	r.mu.Unlock()
}

// ErrMuxClosed: the ReplyMux was closed.
var ErrMuxClosed = errors.New("reply mux closed")

// Close ends the reply subscription; every request still awaited gets a
// Reply with no message, and Send fails from now on. The connection stays
// as it is.
func (r *ReplyMux) Close() error {
	r.mu.Lock()
	r.closed = true
	sub := r.sub
	pending := r.pending
	r.pending, r.order = nil, nil
	r.mu.Unlock()
	for _, w := range pending {
		w.give(nil)
	}
	if sub == nil {
		return nil
	}
	return sub.Unsubscribe()
}

// NoResponders reports whether a reply is the server's "no responders".
func NoResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") == "503"
}
