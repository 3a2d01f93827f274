package client

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/internal/jsapi"
)

// The look-ups of the job ids given to PublishAsync go in batches, one per
// workflow: a batched direct get of the job bucket (jsapi.DirectRequest
// with MultiLast) is one request for the claims of many ids, answered by
// one message per claim found and then a status. One request per event
// cost the server an API request per event, a large share of a producer's
// throughput (BENCHMARKS.md, "Job id claims").
//
// A batch is sent once it holds lookupBatchMax ids (or
// Config.MaxAsyncPending, or half the largest message the server takes),
// once a PublishAsync adds to it lookupGather or more after its first, or
// once a Wait needs its answer, whichever comes first. So a producer that
// waits for each event at once pays a look-up per event, sent while the
// event is on its way, as before; one with many events in flight pays one
// per batch. Nothing runs in the background: an id never waited for is
// looked up only if others join its batch.
//
// A producer still on the permissions of before batches may read one
// claim at a time but not send a batch. The first batch of each workflow
// is followed by a flush, whose round trip brings the server's refusal, if
// any, back before it ends: then that workflow's ids are looked up one at
// a time, in Wait, as before batches; and if the server refuses that too,
// not at all (the worker checks each id again), so that a Wait costs
// Config.Timeout once, not once per event.
const (
	// lookupBatchMax: the server refuses a batch with more than 1024
	// claims found (413 Too Many Results); fewer keep a Wait's answer near.
	lookupBatchMax = 256
	// lookupGather bounds how long a batch gathers while events come.
	lookupGather = time.Millisecond
)

// lookups holds each workflow's batch still gathering, and how its ids
// are looked up.
type lookups struct {
	mu   sync.Mutex
	open map[string]*lookupBatch // by workflow
	mode map[string]lookupMode   // by workflow; absent: lookupUnknown
}

// lookupMode is how a workflow's job ids are looked up.
type lookupMode int

const (
	lookupUnknown lookupMode = iota // in batches, the server's answer to one not yet known
	lookupBatched                   // in batches: the server took one
	lookupEach                      // one request per id: the server refused a batch
	lookupNone                      // not at all: the server refused that too
)

// modeOf is how workflow's ids are looked up now.
func (l *lookups) modeOf(workflow string) lookupMode {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mode[workflow]
}

// setMode records what the server's answers have shown of workflow: a
// mode never goes back to an earlier one.
func (l *lookups) setMode(workflow string, mode lookupMode) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mode == nil {
		l.mode = map[string]lookupMode{}
	}
	l.mode[workflow] = max(l.mode[workflow], mode)
}

// lookupBatch is the look-up of the claims of some job ids of one
// workflow, and then its answer.
type lookupBatch struct {
	workflow string
	since    time.Time // its first id
	subjects []string  // the ids' claim subjects (jsapi.JobSubject); fixed once sent
	size     int       // of the request's body, about
	sent     atomic.Bool

	done    chan struct{} // closed once the answer is complete or given up on
	mu      sync.Mutex
	found   map[string]*nats.Msg // the claims found, by subject
	over    bool
	refused bool // the server refused the batch: look each id up alone
}

// requestSize is the size of a batch's body without its subjects, about.
const requestSize = len(`{"batch":1024,"multi_last":[]}`)

// lookUpJob adds the look-up of job id's claim to workflow's batch, and
// sends the batch if it is full or has gathered long enough. The answer
// is in the batch returned, under the subject returned. Where the server
// refused batches it returns a batch refused already, for Wait to look the
// id up alone, and where it refused that too, nil.
func (c *Client) lookUpJob(workflow, id string) (*lookupBatch, string) {
	subject := jsapi.JobSubject(workflow, id)
	now := time.Now()
	c.look.mu.Lock()
	switch c.look.mode[workflow] {
	case lookupEach:
		c.look.mu.Unlock()
		b := &lookupBatch{workflow: workflow, done: make(chan struct{}), over: true, refused: true}
		b.sent.Store(true)
		close(b.done)
		return b, subject
	case lookupNone:
		c.look.mu.Unlock()
		return nil, ""
	}
	b := c.look.open[workflow]
	if b == nil {
		b = &lookupBatch{workflow: workflow, since: now, size: requestSize, done: make(chan struct{})}
		if c.look.open == nil {
			c.look.open = map[string]*lookupBatch{}
		}
		c.look.open[workflow] = b
	}
	b.subjects = append(b.subjects, subject)
	b.size += len(subject) + 3
	send := len(b.subjects) >= min(lookupBatchMax, c.cfg.MaxAsyncPending) ||
		now.Sub(b.since) >= lookupGather || int64(b.size) >= c.nc.MaxPayload()/2
	if send {
		delete(c.look.open, workflow)
		b.sent.Store(true)
	}
	c.look.mu.Unlock()
	if send {
		c.sendLookup(b)
	}
	return b, subject
}

// flushLookup sends b now unless it is sent already: a Wait needs it.
func (c *Client) flushLookup(b *lookupBatch) {
	if b.sent.Load() {
		return
	}
	c.look.mu.Lock()
	if b.sent.Load() {
		c.look.mu.Unlock()
		return
	}
	b.sent.Store(true)
	if c.look.open[b.workflow] == b {
		delete(c.look.open, b.workflow)
	}
	c.look.mu.Unlock()
	c.sendLookup(b)
}

func (c *Client) sendLookup(b *lookupBatch) {
	subject := jsapi.JobsDirectSubject(b.workflow)
	body, err := json.Marshal(jsapi.DirectRequest{MultiLast: b.subjects, Batch: len(b.subjects)})
	if err == nil {
		_, err = c.mux.SendFunc(c.nc, &nats.Msg{Subject: subject, Data: body}, b.deliver, c.cfg.Timeout)
	}
	if err != nil {
		b.deliver(nil) // as if unanswered: Wait goes on without it
		return
	}
	if c.batchRefused(b.workflow, subject) {
		b.refuse()
	}
}

// batchRefused reports whether the server refuses this connection the
// batched look-up of workflow's ids (subject), which it learns once per
// workflow: after the first batch, a flush, whose answer comes after the
// refusal if there is one. Until it knows (the flush failed), it takes
// batches for allowed.
func (c *Client) batchRefused(workflow, subject string) bool {
	if mode := c.look.modeOf(workflow); mode != lookupUnknown {
		return mode != lookupBatched
	}
	if c.nc.FlushTimeout(c.cfg.Timeout) != nil {
		return false
	}
	if deniedPublish(c.nc.LastError(), subject) {
		c.look.setMode(workflow, lookupEach)
		return true
	}
	c.look.setMode(workflow, lookupBatched)
	return false
}

// deniedPublish reports whether err is the server's refusal to let this
// connection publish to subject.
func deniedPublish(err error, subject string) bool {
	return errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), "Publish to "+strconv.Quote(subject))
}

// refuse ends b as refused by the server: each of its ids is looked up
// alone.
func (b *lookupBatch) refuse() {
	b.mu.Lock()
	b.refused = true
	b.mu.Unlock()
	b.deliver(nil)
}

// wasRefused reports whether the server refused b.
func (b *lookupBatch) wasRefused() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refused
}

// deliver takes the batch's answer, one message at a time: a claim found,
// until a status (the end of the batch, 204; nothing found, 404; or an
// error) or nil (given up on) ends it.
func (b *lookupBatch) deliver(m *nats.Msg) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.over {
		return false
	}
	if m != nil && m.Header.Get("Status") == "" {
		if b.found == nil {
			b.found = map[string]*nats.Msg{}
		}
		b.found[m.Header.Get(jetstream.SubjectHeader)] = m
		return true
	}
	b.over = true
	close(b.done)
	return false
}

// claim is the claim found under subject, nil if none (yet).
func (b *lookupBatch) claim(subject string) *nats.Msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.found[subject]
}
