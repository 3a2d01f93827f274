package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsapi"
	"github.com/orderly-dev/orderly/internal/jsonx"
)

// Job ids are idempotency keys. The stream's duplicate window
// (Spec.DuplicateWindow) is short and lives in the server's memory, rebuilt
// from the messages still stored: a work-queue stream forgets an id as soon
// as its event is acknowledged and the server restarts. What makes a job id
// count once is its claim (see contract.Job): the worker, before it applies
// an event, creates the entry of the event's job id in the workflow's job
// bucket (kept for Spec.DedupeWindow), and only the event that created it,
// or a redelivery of that same event, is applied. Producers (package
// client) read the claims to refuse a reused id before publishing.

func marshalJob(j *contract.Job) []byte {
	b := make([]byte, 0, 96+len(j.Key)+len(j.Event))
	b = append(b, `{"key":`...)
	b = jsonx.AppendString(b, j.Key)
	b = append(b, `,"event":`...)
	b = jsonx.AppendString(b, j.Event)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, j.Sequence, 10)
	b = append(b, `,"at":`...)
	b, ok := jsonx.AppendTime(b, j.At)
	if !ok {
		b = append(b, `"0001-01-01T00:00:00Z"`...)
	}
	return append(b, '}')
}

// jobTimeout bounds a claim whose context has no deadline.
const jobTimeout = 5 * time.Second

// Claim is the result of claiming one job id.
type Claim struct {
	// Outcome is meaningful when Err is nil.
	Outcome contract.ClaimOutcome
	// Held is the job holding the id: the one claimed for Claimed.
	Held contract.Job
	// Err says why the claim could not be made or read (a timeout, no
	// server): the event must be handed back, not applied.
	Err error
}

// Jobs is a workflow's job bucket, as the worker uses it to claim job ids.
type Jobs struct {
	nc *nats.Conn
	js jetstream.JetStream

	// ForgetFired's: purged below this sequence, at this time.
	forgotBelow atomic.Uint64
	forgotAt    atomic.Int64
	mux         *jsapi.ReplyMux
	conn        *Conn
	workflow    string
	prefix      string // "$KV.<bucket>."
}

// Jobs opens the job bucket of a provisioned workflow.
func (c *Conn) Jobs(ctx context.Context, workflow string) (*Jobs, error) {
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return nil, err
	}
	_, err := c.js.KeyValue(ctx, contract.JobsBucket(workflow))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("queue: jobs of %s: %w", workflow, ErrNotProvisioned)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: job bucket of %s: %w", workflow, err)
	}
	return &Jobs{nc: c.nc, js: c.js, mux: &c.mux, conn: c, workflow: workflow, prefix: "$KV." + contract.JobsBucket(workflow) + "."}, nil
}

// Claim claims each job id of jobs (ID, Key, Event, Sequence and At set) for
// its event: it creates the id's entry if there is none. The creates are
// sent at once and then awaited, and so are the reads of the ids found held,
// so a batch costs about one round trip (two with ids held). Results are in
// the order of jobs.
//
// Each round trip is bounded by ctx's deadline or, without one, by 5s.
func (j *Jobs) Claim(ctx context.Context, jobs []contract.Job) []Claim {
	// Not context.WithTimeout: this runs for every batch of every key, and
	// a timer is cheaper than a context.
	timeout := jobTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	ctx, stop := j.conn.linked(ctx)
	defer stop()
	res := make([]Claim, len(jobs))
	var held []int // the jobs whose id is held: read what holds it
	j.roundTrip(ctx, len(jobs), timeout, func(i int) *nats.Msg {
		m := nats.NewMsg(j.prefix + contract.JobKey(jobs[i].ID))
		m.Data = marshalJob(&jobs[i])
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0") // create only
		return m
	}, func(i int, m *nats.Msg, err error) {
		if err == nil {
			if jsapi.NoResponders(m) {
				err = nats.ErrNoResponders
			} else if _, err = parsePubAck(m.Data); err == nil {
				res[i] = Claim{Outcome: contract.Claimed, Held: jobs[i]}
				return
			} else if errors.Is(casError("", err), ErrConflict) {
				held = append(held, i)
				return
			}
		}
		res[i].Err = fmt.Errorf("queue: claim job %s: %w", jobs[i].ID, err)
	})
	j.roundTrip(ctx, len(held), timeout, func(k int) *nats.Msg {
		return nats.NewMsg(jsapi.JobGetSubject(j.workflow, jobs[held[k]].ID))
	}, func(k int, m *nats.Msg, err error) {
		i := held[k]
		h, err := jsapi.ParseJob(jobs[i].ID, m, err)
		if err != nil {
			// ErrNoJob here: the claim expired between the create and
			// the read. Trying again later creates it.
			res[i].Err = fmt.Errorf("queue: claim job %s: %w", jobs[i].ID, err)
			return
		}
		res[i] = Claim{Outcome: h.Outcome(jobs[i].Key, jobs[i].Event, jobs[i].Sequence), Held: h}
	})
	return res
}

// roundTrip sends the n requests that msg makes and passes each one's reply
// to got, in the order they come (err: none came, or none could be sent).
func (j *Jobs) roundTrip(ctx context.Context, n int, timeout time.Duration, msg func(i int) *nats.Msg, got func(i int, m *nats.Msg, err error)) {
	if n == 0 {
		return
	}
	ch := make(chan jsapi.Reply, n)
	tokens := make([]string, n)
	waiting := 0
	t := time.NewTimer(timeout)
	defer t.Stop()
	for i := range n {
		tok, err := j.mux.Send(j.nc, msg(i), ch, i, timeout)
		if err != nil {
			got(i, nil, err)
			continue
		}
		tokens[i] = tok
		waiting++
	}
	for ; waiting > 0; waiting-- {
		select {
		case r := <-ch:
			tokens[r.I] = ""
			if r.Msg == nil {
				got(r.I, nil, context.DeadlineExceeded)
				continue
			}
			got(r.I, r.Msg, nil)
		case <-ctx.Done():
			j.giveUp(tokens, got, lost(ctx, ctx.Err()))
			return
		case <-t.C:
			j.giveUp(tokens, got, context.DeadlineExceeded)
			return
		}
	}
}

// giveUp stops waiting for the replies of tokens still awaited.
func (j *Jobs) giveUp(tokens []string, got func(i int, m *nats.Msg, err error), err error) {
	for i, tok := range tokens {
		if tok != "" {
			j.mux.Forget(tok)
			got(i, nil, err)
		}
	}
}

// jobsBucketConfig: one claim per job id, expiring after the dedupe window.
func jobsBucketConfig(s Spec) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      contract.JobsBucket(s.Workflow),
		Description: "Orderly job ids of workflow " + s.Workflow,
		History:     1,
		TTL:         s.DedupeWindow,
		Storage:     jetstream.FileStorage, // must outlive a server restart
		Replicas:    s.Replicas,
	}
}
