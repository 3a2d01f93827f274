package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
)

// ErrNoHistory: the workflow keeps no status history (no stream
// contract.HistoryStream): its workers run with --history-per-key 0
// (worker.NoHistory), or none of a version that keeps one has started.
var ErrNoHistory = errors.New("no status history kept for the workflow (its workers run with --history-per-key 0, or none that keeps one has started)")

// ErrInvalidWatch: a watch option out of range (a negative WatchSince).
var ErrInvalidWatch = errors.New("invalid watch option")

// History returns the stored statuses of key in workflow, oldest first: at
// most the workers' --history-per-key of them, none older than their
// --history-max-age. A key with no stored status has none (nil, no error);
// a workflow that keeps no history gives ErrNoHistory.
func (c *Client) History(ctx context.Context, workflow, key string) ([]contract.Status, error) {
	if c.isDone() {
		return nil, ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, err
	}
	if err := contract.ValidateKey(key); err != nil {
		return nil, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	var out []contract.Status
	err := c.readHistory(ctx, workflow, key, 0, func(_ uint64, st contract.Status) { out = append(out, st) })
	if err != nil {
		return nil, fmt.Errorf("client: history of %s: %w", key, err)
	}
	return out, nil
}

// historyInfo is what PublishAndWait needs to know of the history stream.
type historyInfo struct {
	end     uint64        // the last sequence stored
	created time.Time     // when the stream was made
	maxAge  time.Duration // how long a status is kept (0: no limit)
	perKey  int64         // how many of each key are kept (-1: no limit)
}

// history reads the history stream's end and limits; ErrNoHistory if there
// is no such stream.
func (c *Client) history(ctx context.Context, workflow string) (historyInfo, error) {
	s, err := c.js.Stream(ctx, contract.HistoryStream(workflow))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return historyInfo{}, ErrNoHistory
	}
	if err != nil {
		return historyInfo{}, fmt.Errorf("history stream: %w", err)
	}
	info := s.CachedInfo()
	return historyInfo{end: info.State.LastSeq, created: info.Created, maxAge: info.Config.MaxAge, perKey: info.Config.MaxMsgsPerSubject}, nil
}

// readHistory calls fn with the statuses of key stored when it starts,
// oldest first, with their stream sequences, skipping those after upTo
// (0: no bound), through a short-lived consumer. Messages that are not a
// Status are skipped.
func (c *Client) readHistory(ctx context.Context, workflow, key string, upTo uint64, fn func(seq uint64, st contract.Status)) error {
	stream := contract.HistoryStream(workflow)
	cons, err := c.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject:     contract.StatusSubject(workflow, key),
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute, // if we vanish before deleting it
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return ErrNoHistory
	}
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = c.js.DeleteConsumer(dctx, stream, cons.CachedInfo().Name)
	}()
	// What is stored now, and no more: a busy key does not keep the
	// reading going, and the result is bounded by the per-key limit.
	for left := cons.CachedInfo().NumPending; left > 0; {
		// No wait: what is pending is stored; what went meanwhile (aged
		// out, or pushed out by newer statuses of the key) is not coming.
		batch, err := cons.FetchNoWait(int(min(left, 256)))
		if err != nil {
			return err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil || left == 0 {
				continue // drained, not used: the batch ends by itself
			}
			left = min(left-1, md.NumPending)
			if upTo > 0 && md.Sequence.Stream > upTo {
				left = 0
				continue
			}
			if st, err := contract.DecodeStatus(m.Data()); err == nil {
				fn(md.Sequence.Stream, st)
			}
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if got == 0 {
			return nil
		}
	}
	return nil
}

// follower delivers statuses from the history stream, those stored from
// where it starts and then as they are stored, through an ordered
// consumer: after a lost connection (or a restarted server) it makes a new
// consumer that starts after the last status it delivered, so none is
// missed or delivered twice.
type follower struct {
	c      chan contract.Status
	js     jetstream.JetStream
	stream string
	cons   jetstream.Consumer
	it     jetstream.MessagesContext
	quit   chan struct{} // closed by stop
	done   chan struct{} // closed when run has returned
	err    error         // why run returned, once done is closed
}

// follow starts a follower of workflow's statuses matching key (every key
// when empty) that keep accepts (all if nil), starting as cfg says.
func (c *Client) follow(ctx context.Context, workflow, key string, cfg jetstream.OrderedConsumerConfig, keep func(contract.Status) bool) (*follower, error) {
	cfg.FilterSubjects = []string{contract.StatusSubject(workflow, key)}
	cons, err := c.js.OrderedConsumer(ctx, contract.HistoryStream(workflow), cfg)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, ErrNoHistory
	}
	if err != nil {
		return nil, fmt.Errorf("history stream: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("history stream: %w", err)
	}
	f := &follower{
		c: make(chan contract.Status, 64), js: c.js, stream: contract.HistoryStream(workflow), cons: cons, it: it,
		quit: make(chan struct{}), done: make(chan struct{}),
	}
	go f.run(keep)
	return f, nil
}

// run passes on what the consumer delivers until stop, or until the
// consumer ends (its connection closed). A slow reader holds up the
// consumer, whose buffer is bounded, rather than grow a queue here.
func (f *follower) run(keep func(contract.Status) bool) {
	defer close(f.done)
	for {
		m, err := f.it.Next()
		if err != nil {
			f.err = err
			return
		}
		st, err := contract.DecodeStatus(m.Data())
		if err != nil || keep != nil && !keep(st) {
			continue
		}
		select {
		case f.c <- st:
		case <-f.quit:
			return
		}
	}
}

// stop ends the follower and waits for it, then deletes its consumer
// rather than leave it to the server's inactivity threshold (5 minutes):
// PublishAndWait makes one per call. While the consumer is being made again
// after a lost connection, stopping can take until the attempt in progress
// ends (seconds).
func (f *follower) stop() {
	close(f.quit)
	f.it.Stop()
	<-f.done
	if info := f.cons.CachedInfo(); info != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = f.js.DeleteConsumer(ctx, f.stream, info.Name)
	}
}

// jobOutcome is what the key's stored statuses up to seq say of job id:
// its newest status (other than the skip of a duplicate), whether one was
// found, and whether the history goes back far enough that a status of a
// job taken at taken (zero: unknown) would be in it.
func (c *Client) jobOutcome(ctx context.Context, workflow, key, id string, h historyInfo, taken time.Time) (st contract.Status, found, covered bool, err error) {
	var (
		n      int64
		oldest time.Time
	)
	err = c.readHistory(ctx, workflow, key, h.end, func(_ uint64, s contract.Status) {
		if n == 0 {
			oldest = s.At
		}
		n++
		if s.JobID == id && !(s.Error != nil && s.Error.Code == contract.CodeDuplicate) {
			st, found = s, true
		}
	})
	if err != nil {
		return st, false, false, err
	}
	// The stream was there when the job was taken, and nothing of the
	// key's history since has been dropped: by age, or by the per-key
	// limit.
	covered = !taken.IsZero() && h.created.Before(taken) &&
		(h.maxAge <= 0 || time.Since(taken) < h.maxAge-time.Minute) &&
		(h.perKey < 0 || n < h.perKey || !oldest.After(taken))
	return st, found, covered, nil
}

// stillToCome reports whether the first status of job id, whose event is
// stored as seq and was taken by a worker, is still to come: the key's
// state has not committed the event yet (the worker is between its claim
// and its commit), or the job's slow work is still pending. Otherwise the
// job is committed and its status, not in the history, was lost (its
// worker stopped between the commit and the publish).
func (c *Client) stillToCome(ctx context.Context, workflow, key, id string, seq uint64) bool {
	rec, err := c.State(ctx, workflow, key)
	switch {
	case errors.Is(err, ErrNoState):
		return true
	case err != nil:
		return false
	}
	if slices.ContainsFunc(rec.Pending, func(p contract.PendingWork) bool { return p.JobID == id }) {
		return true
	}
	// Applied lists the sequences of the key's latest events, oldest
	// first: one older than all of them was handled long since.
	return !slices.Contains(rec.Applied, seq) && (len(rec.Applied) == 0 || seq > rec.Applied[0])
}
