package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsapi"
)

// The inventory (contract's index.go): one stream per workflow keeping one
// message per subject, a state entry per key and a work entry per key with
// slow work pending. The worker writes it as transitions commit: an
// entry is published before the commit that makes it true, pipelined with
// it on the same connection (so a commit that reached the server has its
// entry), and the entry the commit makes stale is purged after it. Counts
// and lists are direct gets, which the server answers from its index of
// subjects.

// indexStreamConfig: one message per subject, so that writing a key's entry
// again replaces it; direct gets on, for counts and lists from any replica.
func indexStreamConfig(s Spec) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              contract.IndexStream(s.Workflow),
		Description:       "Orderly inventory of workflow " + s.Workflow + ": its keys by state",
		Subjects:          []string{contract.IndexSubject(s.Workflow) + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgsPerSubject: 1,
		// An entry is a few hundred bytes at most (a key, a state, a job
		// id and an action name).
		MaxMsgSize:  4 << 10,
		AllowDirect: true,
		Replicas:    s.Replicas,
	}
}

// workflowsBucketConfig holds every workflow's description.
func workflowsBucketConfig(replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      contract.WorkflowsBucket,
		Description: "Orderly workflows: their states and diagrams, as their workers run them",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}
}

// PutWorkflow writes info into the workflows bucket unless it holds it
// already (every replica writes it at every start), and returns what was
// there before (nil if nothing was).
func (c *Conn) PutWorkflow(ctx context.Context, info *contract.WorkflowInfo) (*contract.WorkflowInfo, error) {
	kv, err := c.js.KeyValue(ctx, contract.WorkflowsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("queue: workflows: %w", ErrNotProvisioned)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: workflows: %w", err)
	}
	val, err := json.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("queue: workflow %s: %w", info.Name, err)
	}
	var prev *contract.WorkflowInfo
	e, err := kv.Get(ctx, info.Name)
	switch {
	case err == nil:
		var p contract.WorkflowInfo
		if json.Unmarshal(e.Value(), &p) == nil {
			prev = &p
		}
		if bytes.Equal(e.Value(), val) {
			return prev, nil
		}
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, fmt.Errorf("queue: workflow %s: %w", info.Name, err)
	}
	if _, err := kv.Put(ctx, info.Name, val); err != nil {
		return nil, fmt.Errorf("queue: workflow %s: %w", info.Name, err)
	}
	return prev, nil
}

// Index is a workflow's inventory as the worker writes it. Writes are sent
// without waiting for their answers, at most a window of them at once (a
// write waits for room beyond that); an answer that says the write failed,
// or none within IndexWriteTimeout, is handed to the failed callback with
// the key, for the worker to repair the key's entries. It is safe for
// concurrent use.
type Index struct {
	nc       *nats.Conn
	mux      *jsapi.ReplyMux
	workflow string
	purge    string // the purge API subject of the stream
	timeout  time.Duration
	failed   func(key string)

	// replies has room for an answer per write in flight and as many
	// given up on (one may still come): the mux never waits for it.
	replies chan jsapi.Reply
	room    chan struct{} // a token per write that may be sent
	stop    chan struct{} // closed by Close: the drain ends
	done    chan struct{} // closed when the drain has ended
	once    sync.Once

	mu       sync.Mutex
	inflight map[int]*write // by the tag its answer comes with
	next     int
	closed   bool
	// bySubject holds, for each subject with a write in flight, the
	// write's done channel: the next write of the subject waits for it.
	bySubject map[string]chan struct{}
}

// write is a write in flight.
type write struct {
	key, subject, token string
	sent                time.Time
	done                chan struct{} // closed when answered or given up on
}

// IndexWriteTimeout is how long a write of the inventory may wait for its
// answer before it counts as failed.
const IndexWriteTimeout = 10 * time.Second

// Index opens workflow's inventory for writing, with at most window writes
// in flight (at least 1); failed is called, from the Index's own goroutine,
// with the key of each write that failed. Close stops it.
func (c *Conn) Index(workflow string, window int, failed func(key string)) *Index {
	return c.index(workflow, window, IndexWriteTimeout, failed)
}

func (c *Conn) index(workflow string, window int, timeout time.Duration, failed func(key string)) *Index {
	window = max(window, 1)
	x := &Index{
		nc: c.nc, mux: &c.mux, workflow: workflow,
		purge:   "$JS.API.STREAM.PURGE." + contract.IndexStream(workflow),
		timeout: timeout, failed: failed,
		replies:   make(chan jsapi.Reply, 2*window),
		room:      make(chan struct{}, window),
		inflight:  map[int]*write{},
		bySubject: map[string]chan struct{}{},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	for range window {
		x.room <- struct{}{}
	}
	go x.drain()
	return x
}

// drain reads the answers of writes, and gives up on those unanswered
// for longer than the timeout (their answer lost with a connection, say),
// so that room is never held for good.
func (x *Index) drain() {
	defer close(x.done)
	t := time.NewTicker(max(x.timeout/10, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case r := <-x.replies:
			if w := x.finish(r.I); w != nil && (r.Msg == nil || !writeOK(r.Msg)) {
				x.failed(w.key)
			}
		case now := <-t.C:
			for _, w := range x.expired(now) {
				x.failed(w.key)
			}
		case <-x.stop:
			return
		}
	}
}

// finish ends the write tagged id (nil if it ended already).
func (x *Index) finish(id int) *write {
	x.mu.Lock()
	w := x.inflight[id]
	if w != nil {
		delete(x.inflight, id)
		x.ended(w)
	}
	x.mu.Unlock()
	return w
}

// ended releases what write w held. x.mu held.
func (x *Index) ended(w *write) {
	if x.bySubject[w.subject] == w.done {
		delete(x.bySubject, w.subject)
	}
	close(w.done)
	x.room <- struct{}{}
}

// expired ends and returns the writes sent before now - timeout.
func (x *Index) expired(now time.Time) []*write {
	var out []*write
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, w := range x.inflight {
		if now.Sub(w.sent) > x.timeout {
			delete(x.inflight, id)
			if w.token != "" {
				x.mux.Forget(w.token)
			}
			x.ended(w)
			out = append(out, w)
		}
	}
	return out
}

// writeOK reports whether the answer to a publish or a purge says it was
// done.
func writeOK(m *nats.Msg) bool {
	if jsapi.NoResponders(m) || len(m.Data) == 0 {
		return false
	}
	return !bytes.Contains(m.Data, []byte(`"error"`))
}

// ErrIndexClosed: a write after Index.Close.
var ErrIndexClosed = errors.New("inventory closed")

// send sends m, a write of subject for key, once there is room (ctx bounds
// the wait) and the previous write of the same subject has been answered:
// a publish and a purge take different paths through the server (the
// stream, the API), and without the wait a purge sent first could remove
// an entry published after it.
func (x *Index) send(ctx context.Context, key, subject string, m *nats.Msg) error {
	for {
		x.mu.Lock()
		prev := x.bySubject[subject]
		x.mu.Unlock()
		if prev != nil {
			select {
			case <-prev:
			case <-x.stop:
				return fmt.Errorf("queue: inventory of %s: %w", key, ErrIndexClosed)
			case <-ctx.Done():
				return fmt.Errorf("queue: inventory of %s: %w", key, ctx.Err())
			}
			continue
		}
		select {
		case <-x.room:
		case <-x.stop:
			return fmt.Errorf("queue: inventory of %s: %w", key, ErrIndexClosed)
		case <-ctx.Done():
			return fmt.Errorf("queue: inventory of %s: %w", key, ctx.Err())
		}
		x.mu.Lock()
		if x.closed || x.bySubject[subject] != nil {
			// Closed, or another write of the subject went first (then
			// wait for it).
			closed := x.closed
			x.room <- struct{}{}
			x.mu.Unlock()
			if closed {
				return fmt.Errorf("queue: inventory of %s: %w", key, ErrIndexClosed)
			}
			continue
		}
		x.next++
		id := x.next
		w := &write{key: key, subject: subject, sent: time.Now(), done: make(chan struct{})}
		x.inflight[id] = w
		x.bySubject[subject] = w.done
		x.mu.Unlock()
		// An answer after Close lands in replies, which has room for it,
		// and is never read.
		token, err := x.mux.Send(x.nc, m, x.replies, id, x.timeout)
		x.mu.Lock()
		if err != nil {
			if x.inflight[id] == w {
				delete(x.inflight, id)
				x.ended(w)
			}
		} else {
			w.token = token
		}
		x.mu.Unlock()
		if err != nil {
			return fmt.Errorf("queue: inventory of %s: %w", key, err)
		}
		return nil
	}
}

// Enter writes e, the key's entry in its state (replacing an entry of an
// earlier visit of the same state).
func (x *Index) Enter(ctx context.Context, e *contract.IndexEntry) error {
	body, err := contract.MarshalIndexEntry(e)
	if err != nil {
		return err
	}
	subject := contract.IndexStateSubject(x.workflow, e.State, e.Key)
	m := nats.NewMsg(subject)
	m.Data = body
	return x.send(ctx, e.Key, subject, m)
}

// Leave removes key's entry in state.
func (x *Index) Leave(ctx context.Context, key, state string) error {
	subject := contract.IndexStateSubject(x.workflow, state, key)
	return x.send(ctx, key, subject, x.purgeMsg(subject))
}

// WorkBegan writes key's work entry.
func (x *Index) WorkBegan(ctx context.Context, e *contract.WorkEntry) error {
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	subject := contract.IndexWorkSubject(x.workflow, e.Key)
	m := nats.NewMsg(subject)
	m.Data = body
	return x.send(ctx, e.Key, subject, m)
}

// WorkEnded removes key's work entry.
func (x *Index) WorkEnded(ctx context.Context, key string) error {
	subject := contract.IndexWorkSubject(x.workflow, key)
	return x.send(ctx, key, subject, x.purgeMsg(subject))
}

func (x *Index) purgeMsg(subject string) *nats.Msg {
	m := nats.NewMsg(x.purge)
	m.Data = []byte(`{"filter":"` + subject + `"}`)
	return m
}

// InFlight is the number of writes awaiting their answer.
func (x *Index) InFlight() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.inflight)
}

// Close waits, until ctx ends, for the answers of the writes in flight,
// then stops the Index's goroutine; the answers still awaited then are
// given up on, and writes after Close fail with ErrIndexClosed. Safe to
// call twice.
func (x *Index) Close(ctx context.Context) error {
	var err error
	x.once.Do(func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for x.InFlight() > 0 && err == nil {
			select {
			case <-t.C:
			case <-ctx.Done():
				err = fmt.Errorf("queue: inventory of %s: %d writes unanswered: %w", x.workflow, x.InFlight(), ctx.Err())
			}
		}
		x.mu.Lock()
		x.closed = true
		for id, w := range x.inflight {
			delete(x.inflight, id)
			if w.token != "" {
				x.mux.Forget(w.token)
			}
			if x.bySubject[w.subject] == w.done {
				delete(x.bySubject, w.subject)
			}
			close(w.done)
		}
		x.mu.Unlock()
		close(x.stop)
		<-x.done
	})
	return err
}

// KeyEntries are a key's entries in the inventory, as read for a repair.
type KeyEntries struct {
	// States are its state entries: one, but for a moment after a failed
	// or cut-off write, in stream order.
	States []IndexMsg[contract.IndexEntry]
	// Work is its work entry, if it has one.
	Work *IndexMsg[contract.WorkEntry]
}

// IndexMsg is an entry with where it is stored.
type IndexMsg[E any] struct {
	Entry    E
	Subject  string
	Sequence uint64
}

// Entries reads key's entries (one direct get).
func (x *Index) Entries(ctx context.Context, key string) (KeyEntries, error) {
	var out KeyEntries
	_, err := jsapi.DirectBatch(ctx, x.nc, x.mux, contract.IndexStream(x.workflow), jsapi.DirectRequest{
		MultiLast: []string{contract.IndexKeyFilter(x.workflow, key), contract.IndexWorkSubject(x.workflow, key)},
	}, func(sm jsapi.StoredMsg) bool {
		if strings.HasPrefix(sm.Subject, contract.IndexWorkSubject(x.workflow, "")) {
			e, err := contract.DecodeWorkEntry(sm.Data)
			if err != nil {
				e = contract.WorkEntry{Workflow: x.workflow, Key: key}
			}
			out.Work = &IndexMsg[contract.WorkEntry]{Entry: e, Subject: sm.Subject, Sequence: sm.Sequence}
			return true
		}
		e, err := contract.DecodeIndexEntry(sm.Data)
		if err != nil {
			// A body not ours: an entry all the same, to be replaced.
			e = contract.IndexEntry{Workflow: x.workflow, Key: key, State: stateOfSubject(x.workflow, sm.Subject)}
		}
		out.States = append(out.States, IndexMsg[contract.IndexEntry]{Entry: e, Subject: sm.Subject, Sequence: sm.Sequence})
		return true
	})
	if err != nil {
		return KeyEntries{}, fmt.Errorf("queue: inventory of %s: %w", key, err)
	}
	return out, nil
}

// workKeysBatch is how many work entries WorkKeys reads per request.
const workKeysBatch = 256

// WorkKeys calls fn with the key of every work entry of the inventory, in
// the order they were written, until fn returns false or ctx ends: the keys
// with slow work pending (and any whose entry a lost removal left stale).
// It reads a batch at a time, so its memory does not grow with the keys.
func (x *Index) WorkKeys(ctx context.Context, fn func(key string) bool) error {
	err := jsapi.DirectEach(ctx, x.nc, x.mux, contract.IndexStream(x.workflow), contract.IndexWorkSubject(x.workflow, "*"), workKeysBatch,
		func(sm jsapi.StoredMsg) bool { return fn(contract.KeyOfSubject(sm.Subject)) })
	if err != nil {
		return fmt.Errorf("queue: work entries of %s: %w", x.workflow, err)
	}
	return nil
}

// stateOfSubject returns the state token of a state entry's subject.
func stateOfSubject(workflow, subject string) string {
	rest := strings.TrimPrefix(subject, contract.IndexSubject(workflow)+".state.")
	state, _, _ := strings.Cut(rest, ".")
	return state
}

// Delete removes the entry stored at seq; an entry gone already is no
// error.
func (x *Index) Delete(ctx context.Context, seq uint64) error {
	err := jsapi.DeleteMsg(ctx, x.nc, contract.IndexStream(x.workflow), seq)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("queue: inventory: delete %d: %w", seq, err)
	}
	return nil
}

// Restore writes e if the key has no entry in e.State (written meanwhile
// by the key's actor, the entry there is newer and stays); replace writes
// it whatever is there.
func (x *Index) Restore(ctx context.Context, e *contract.IndexEntry, replace bool) error {
	body, err := contract.MarshalIndexEntry(e)
	if err != nil {
		return err
	}
	return x.put(ctx, contract.IndexStateSubject(x.workflow, e.State, e.Key), body, replace)
}

// RestoreWork writes e if the key has no work entry.
func (x *Index) RestoreWork(ctx context.Context, e *contract.WorkEntry) error {
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return x.put(ctx, contract.IndexWorkSubject(x.workflow, e.Key), body, false)
}

func (x *Index) put(ctx context.Context, subject string, body []byte, replace bool) error {
	m := nats.NewMsg(subject)
	m.Data = body
	if !replace {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	}
	resp, err := x.nc.RequestMsgWithContext(ctx, m)
	if err == nil {
		_, err = parsePubAck(resp.Data)
	}
	if err != nil && !replace && errors.Is(casError("", err), ErrConflict) {
		return nil // written meanwhile
	}
	if err != nil {
		return fmt.Errorf("queue: inventory: write %s: %w", subject, err)
	}
	return nil
}

// IndexCount returns how many entries of workflow's inventory match filter
// (one direct get).
func (c *Conn) IndexCount(ctx context.Context, workflow, filter string) (uint64, error) {
	n, err := jsapi.DirectCount(ctx, c.nc, &c.mux, contract.IndexStream(workflow), filter)
	if err != nil {
		return 0, fmt.Errorf("queue: inventory of %s: %w", workflow, err)
	}
	return n, nil
}
