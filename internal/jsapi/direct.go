package jsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DirectRequest is a batched direct get ($JS.API.DIRECT.GET.<stream>, on a
// stream with AllowDirect): the messages under NextFor (which may hold
// wildcards) from Seq on, in stream order, at most Batch of them; or, with
// MultiLast, the last message of each subject its filters match. Any
// replica of the stream answers, so a read may lag the leader by what
// replication has not carried yet.
type DirectRequest struct {
	Seq       uint64   `json:"seq,omitempty"`
	NextFor   string   `json:"next_by_subj,omitempty"`
	Batch     int      `json:"batch,omitempty"`
	MaxBytes  int      `json:"max_bytes,omitempty"`
	MultiLast []string `json:"multi_last,omitempty"`
}

// numPendingHeader, on a direct get's answer, counts the messages matching
// after the one it comes with (or, on the end of a batch, after the last).
const numPendingHeader = "Nats-Num-Pending"

// Direct get status codes (the Status header of an answer with no message).
const (
	directEOB       = "204" // end of a batch
	directNoResults = "404" // nothing matches
)

// DirectBatch sends req and calls fn with each message of the answer, in
// order, until fn returns false. It returns the number of messages still
// matching after the last one fn saw (the server's Nats-Num-Pending: for a
// NextFor request, how many more a further request would find). A stream
// with nothing matching is no error: fn is not called and pending is 0.
// ErrNotProvisioned if no server answers for the stream (none, or one
// without AllowDirect).
//
// The answer comes through mux (nc's), not a subscription of its own: a
// synchronous subscription allocates its queue whole, 64k slots (512 KiB),
// and a worker reading a key's inventory entries on every resume wake-up
// spent half its CPU clearing them (e2ebench wakeups, 2026-11-30).
func DirectBatch(ctx context.Context, nc *nats.Conn, mux *ReplyMux, stream string, req DirectRequest, fn func(StoredMsg) bool) (pending uint64, err error) {
	body, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	timeout := directTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	a := &answer{more: make(chan struct{}, 1)}
	token, err := mux.SendFunc(nc, &nats.Msg{Subject: "$JS.API.DIRECT.GET." + stream, Data: body}, a.add, timeout)
	if err != nil {
		return 0, fmt.Errorf("direct get %s: %w", stream, err)
	}
	defer mux.Forget(token)
	stopped := false
	for {
		m, err := a.next(ctx)
		if err != nil {
			return 0, fmt.Errorf("direct get %s: %w", stream, err)
		}
		status := m.Header.Get("Status")
		switch {
		case status == "" && len(m.Header.Get(jetstream.StreamHeader)) > 0:
			if stopped {
				continue // the rest of the batch, not wanted
			}
			sm, err := directMsg(m)
			if err != nil {
				return 0, fmt.Errorf("direct get %s: %w", stream, err)
			}
			pending = sm.pending
			if !fn(sm.StoredMsg) {
				if req.Batch <= 1 && len(req.MultiLast) == 0 {
					return pending, nil
				}
				stopped = true
			}
		case status == directEOB:
			if stopped {
				return pending, nil
			}
			np, _ := strconv.ParseUint(m.Header.Get(numPendingHeader), 10, 64)
			return np, nil
		case status == directNoResults:
			return 0, nil
		case status == "503":
			return 0, fmt.Errorf("direct get %s: %w", stream, ErrNotProvisioned)
		default:
			return 0, fmt.Errorf("direct get %s: %s %s", stream, status, m.Header.Get("Description"))
		}
	}
}

// directTimeout bounds a direct get whose ctx has no deadline.
const directTimeout = 30 * time.Second

// answer gathers the messages of a batched direct get's answer as the
// mux's goroutine hands them over, for the requester to take in order. It
// holds at most what the request asked for: the server sends no more.
type answer struct {
	mu    sync.Mutex
	msgs  []*nats.Msg
	ended bool          // given up on by the mux (deadline, or closed)
	more  chan struct{} // a token when msgs or ended changed
}

// add is the mux's callback: it keeps m, and wants more until a status
// (the end of the answer) comes.
func (a *answer) add(m *nats.Msg) bool {
	a.mu.Lock()
	if m == nil {
		a.ended = true
	} else {
		a.msgs = append(a.msgs, m)
	}
	a.mu.Unlock()
	select {
	case a.more <- struct{}{}:
	default:
	}
	return m != nil && m.Header.Get("Status") == ""
}

// next returns the answer's next message, waiting for it.
func (a *answer) next(ctx context.Context) (*nats.Msg, error) {
	for {
		a.mu.Lock()
		if len(a.msgs) > 0 {
			m := a.msgs[0]
			a.msgs[0] = nil
			a.msgs = a.msgs[1:]
			a.mu.Unlock()
			return m, nil
		}
		ended := a.ended
		a.mu.Unlock()
		if ended {
			return nil, nats.ErrTimeout
		}
		select {
		case <-a.more:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// directMessage is a message of a direct get's answer.
type directMessage struct {
	StoredMsg
	pending uint64 // Nats-Num-Pending: how many match after it
}

func directMsg(m *nats.Msg) (directMessage, error) {
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	if err != nil {
		return directMessage{}, fmt.Errorf("bad %s header %q", jetstream.SequenceHeader, m.Header.Get(jetstream.SequenceHeader))
	}
	at, err := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	if err != nil {
		return directMessage{}, fmt.Errorf("bad %s header: %w", jetstream.TimeStampHeaer, err)
	}
	np, _ := strconv.ParseUint(m.Header.Get(numPendingHeader), 10, 64)
	return directMessage{
		StoredMsg: StoredMsg{
			Subject: m.Header.Get(jetstream.SubjectHeader), Sequence: seq, Header: m.Header, Data: m.Data, Time: at,
		},
		pending: np,
	}, nil
}

// DirectEach calls fn with each message under filter (which may hold
// wildcards), in stream order, until fn returns false, reading batch of
// them per request: its memory does not grow with the messages.
func DirectEach(ctx context.Context, nc *nats.Conn, mux *ReplyMux, stream, filter string, batch int, fn func(StoredMsg) bool) error {
	seq := uint64(0)
	for {
		more, last := true, uint64(0)
		pending, err := DirectBatch(ctx, nc, mux, stream, DirectRequest{Seq: seq, NextFor: filter, Batch: batch}, func(sm StoredMsg) bool {
			last = sm.Sequence
			more = fn(sm)
			return more
		})
		if err != nil {
			return err
		}
		if !more || last == 0 || pending == 0 {
			return nil
		}
		seq = last + 1
	}
}

// DirectCount returns how many messages of stream are under filter (which
// may hold wildcards): one direct get of the first of them, whose
// Nats-Num-Pending header says how many follow. The server counts them in
// its index of subjects, without reading them: the cost grows with the
// number of subjects matched, not with the stream.
func DirectCount(ctx context.Context, nc *nats.Conn, mux *ReplyMux, stream, filter string) (uint64, error) {
	seen := false
	pending, err := DirectBatch(ctx, nc, mux, stream, DirectRequest{NextFor: filter, Batch: 1}, func(StoredMsg) bool {
		seen = true
		return false
	})
	if err != nil || !seen {
		return 0, err
	}
	return pending + 1, nil
}

// GetLastMsgDirect reads the last message of stream under subject (no
// wildcards) with one direct get; jetstream.ErrMsgNotFound if there is
// none, ErrNotProvisioned if no server answers for the stream.
func GetLastMsgDirect(ctx context.Context, nc *nats.Conn, stream, subject string) (StoredMsg, error) {
	m, err := nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+stream+"."+subject, nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return StoredMsg{}, fmt.Errorf("direct get %s: %w", stream, ErrNotProvisioned)
	}
	if err != nil {
		return StoredMsg{}, fmt.Errorf("direct get %s: %w", stream, err)
	}
	switch status := m.Header.Get("Status"); status {
	case "":
	case directNoResults:
		return StoredMsg{}, jetstream.ErrMsgNotFound
	default:
		return StoredMsg{}, fmt.Errorf("direct get %s: %s %s", stream, status, m.Header.Get("Description"))
	}
	dm, err := directMsg(m)
	if err != nil {
		return StoredMsg{}, fmt.Errorf("direct get %s: %w", stream, err)
	}
	return dm.StoredMsg, nil
}
