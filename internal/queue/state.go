package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsapi"
)

// State bucket errors.
var (
	// ErrConflict: a compare-and-set write found another revision than the
	// one expected; someone else wrote the key. Reload and re-apply.
	ErrConflict = errors.New("state revision conflict")
	// ErrNoState: the key has no stored state (no event was processed for it).
	ErrNoState = errors.New("no state stored for key")
)

// Bucket is a workflow's state bucket: one value per key, written only with
// compare-and-set on the key's revision.
type Bucket struct {
	kv     jetstream.KeyValue
	js     jetstream.JetStream
	nc     *nats.Conn
	mux    *jsapi.ReplyMux
	conn   *Conn
	prefix string // "$KV.<bucket>."
}

// Bucket opens the state bucket of a provisioned workflow.
func (c *Conn) Bucket(ctx context.Context, workflow string) (*Bucket, error) {
	kv, err := c.js.KeyValue(ctx, contract.StateBucket(workflow))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("queue: state of %s: %w", workflow, ErrNotProvisioned)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: state bucket of %s: %w", workflow, err)
	}
	return &Bucket{kv: kv, js: c.js, nc: c.nc, mux: &c.mux, conn: c, prefix: "$KV." + contract.StateBucket(workflow) + "."}, nil
}

// Keys calls fn with each key of the bucket until fn returns false,
// through a short-lived consumer that reads no value (none for an empty
// bucket).
func (b *Bucket) Keys(ctx context.Context, fn func(key string) bool) error {
	st, err := b.kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("queue: keys: %w", err)
	}
	if st.Values() == 0 {
		return nil
	}
	lister, err := b.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("queue: keys: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	for key := range lister.Keys() {
		if !fn(key) {
			return nil
		}
	}
	return nil
}

// Get returns the key's value and revision; ErrNoState if it has none.
func (b *Bucket) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	ctx, stop := b.conn.linked(ctx)
	defer stop()
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("queue: get %s: %w", key, ErrNoState)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("queue: get %s: %w", key, lost(ctx, err))
	}
	return e.Value(), e.Revision(), nil
}

// Put writes value if the key's revision is still rev (0: the key has no
// value yet) and returns the new revision; ErrConflict otherwise. Without a
// deadline in ctx it gives up after putTimeout.
//
// It is one publish on the connection, not jetstream's KeyValue.Update
// (a PublishMsg): this is the worker's commit, once per batch of every key,
// many keys at once, and the generic path decodes every acknowledgement
// with encoding/json and retries on no responders, which the caller
// already does. BenchmarkStateCompareAndSet, 32 writers at once as actors
// commit (2 shared cores, 2026-11-30, medians of 5): Put 31.7 µs and 22.3
// µs of CPU per write, 35 allocations; KeyValue.Update 44.9 µs and 28.8 µs,
// 44 allocations. One writer alone: no difference (52 and 46 µs).
//
// Its answer comes back through the connection's reply multiplexer (the
// job claims' one), not nats.go's request: a request takes the
// connection's lock three times (to file its reply, to publish, to hand
// the reply over), the multiplexer once (to publish), and with thousands
// of actors committing at once on a loaded machine that lock was where
// they waited:
// 75 % of the worker's lock waiting in a mutex profile of the no-op
// pipeline, 1 % with the multiplexer (issue 18, BENCHMARKS.md).
func (b *Bucket) Put(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	seq, err := b.conn.publish(ctx, b.casMsg(key, value, rev))
	if err != nil {
		return 0, casError(key, err)
	}
	return seq, nil
}

// publish publishes m to a stream and returns the sequence it was stored
// at, its answer through the connection's reply multiplexer and parsed by
// hand (see Bucket.Put for why). The error is a *jetstream.APIError when
// the stream refused m. Without a deadline in ctx it gives up after
// putTimeout.
func (c *Conn) publish(ctx context.Context, m *nats.Msg) (uint64, error) {
	timeout := putTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := ctx.Err(); err != nil {
		// Not sent: an answer already on its way would race the end of
		// ctx below, and the caller has given up.
		return 0, err
	}
	ctx, stop := c.linked(ctx)
	defer stop()
	ch := make(chan jsapi.Reply, 1)
	tok, err := c.mux.Send(c.nc, m, ch, 0, timeout)
	if err != nil {
		return 0, lost(ctx, err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	var resp *nats.Msg
	select {
	case r := <-ch:
		resp = r.Msg
	case <-ctx.Done():
		c.mux.Forget(tok)
		return 0, lost(ctx, ctx.Err())
	case <-t.C:
		c.mux.Forget(tok)
	}
	if resp == nil {
		return 0, context.DeadlineExceeded
	}
	if jsapi.NoResponders(resp) {
		return 0, nats.ErrNoResponders
	}
	return parsePubAck(resp.Data)
}

// putTimeout bounds a Put whose context has no deadline.
const putTimeout = 5 * time.Second

// parsePubAck returns the sequence of a JetStream publish acknowledgement,
// {"stream":"S",["domain":"D",]"seq":N,...}, or the *jetstream.APIError it
// carries instead.
func parsePubAck(data []byte) (uint64, error) {
	if !bytes.Contains(data, []byte(`"error"`)) {
		if _, rest, ok := bytes.Cut(data, []byte(`"seq":`)); ok {
			end := 0
			for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
				end++
			}
			if seq, err := strconv.ParseUint(string(rest[:end]), 10, 64); err == nil && seq > 0 {
				return seq, nil
			}
		}
	}
	var r struct {
		Error *jetstream.APIError `json:"error"`
		Seq   uint64              `json:"seq"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return 0, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, data)
	}
	if r.Error != nil {
		return 0, r.Error
	}
	return 0, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, data)
}

// PendingPut is a compare-and-set write sent without waiting for its result.
type PendingPut struct {
	key string
	f   jetstream.PubAckFuture
}

// Wait returns the new revision, or ErrConflict.
func (p *PendingPut) Wait(ctx context.Context) (uint64, error) {
	select {
	case ack := <-p.f.Ok():
		return ack.Sequence, nil
	case err := <-p.f.Err():
		return 0, casError(p.key, err)
	case <-ctx.Done():
		return 0, fmt.Errorf("queue: put %s: %w", p.key, ctx.Err())
	}
}

// PutAsync is Put without waiting, so that writes of many keys pipeline on
// one connection.
func (b *Bucket) PutAsync(key string, value []byte, rev uint64) (*PendingPut, error) {
	f, err := b.js.PublishMsgAsync(b.casMsg(key, value, rev))
	if err != nil {
		return nil, casError(key, err)
	}
	return &PendingPut{key: key, f: f}, nil
}

func (b *Bucket) casMsg(key string, value []byte, rev uint64) *nats.Msg {
	m := nats.NewMsg(b.prefix + key)
	m.Data = value
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	return m
}

func casError(key string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("queue: put %s: %w", key, ErrConflict)
	}
	return fmt.Errorf("queue: put %s: %w", key, err)
}
