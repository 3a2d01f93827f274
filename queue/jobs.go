package queue

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsonx"
)

// Job ids are idempotency keys. The stream's duplicate window
// (Spec.DuplicateWindow) is short and lives in the server's memory, rebuilt
// from the messages still stored: a work-queue stream forgets an id as soon
// as its event is acknowledged and the server restarts. What makes a job id
// count once is its claim: the worker, before it applies an event, creates
// the entry of the event's job id in the workflow's job bucket
// (orderly_jobs_<workflow>, one entry per id, kept for Spec.DedupeWindow),
// and only the event that created it, or a redelivery of that same event, is
// applied. Producers read the claims to refuse a reused id before
// publishing.

// Job id errors callers can test with errors.Is.
var (
	// ErrIDConflict: the job id is held by another key or another event
	// within the dedupe window; nothing was stored (see IDConflictError).
	ErrIDConflict = errors.New("job id conflict")
	// ErrInvalidJobID: the job id is too long or holds control characters.
	ErrInvalidJobID = errors.New("invalid job id")
	// ErrNoJob: no claim holds the job id (never taken by a worker, or
	// taken longer ago than the dedupe window).
	ErrNoJob = errors.New("no job holds the id")
)

// MaxJobIDLen is the longest job id, in bytes.
const MaxJobIDLen = 256

const jobIDRule = "a job id is 1-256 bytes of UTF-8 without control characters or leading or trailing spaces"

// ValidateJobID checks a job id given by a producer: 1-256 bytes of UTF-8,
// no control characters (they would break the message header that carries
// it), no leading or trailing spaces (a header would lose them).
func ValidateJobID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty (%s)", ErrInvalidJobID, jobIDRule)
	case len(id) > MaxJobIDLen:
		return fmt.Errorf("%w: %d bytes is too long (%s)", ErrInvalidJobID, len(id), jobIDRule)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: %q is not UTF-8 (%s)", ErrInvalidJobID, id, jobIDRule)
	case strings.TrimSpace(id) != id:
		return fmt.Errorf("%w: %q has leading or trailing spaces (%s)", ErrInvalidJobID, id, jobIDRule)
	}
	for i, r := range id {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: %q contains a control character at byte %d (%s)", ErrInvalidJobID, id, i, jobIDRule)
		}
	}
	return nil
}

// Job is the claim of a job id: the event that took it first.
type Job struct {
	// ID is the job id.
	ID string `json:"-"`
	// Key is the key of the event that took it.
	Key string `json:"key"`
	// Event is the name of the event that took it.
	Event string `json:"event"`
	// Sequence is that event's sequence in the events stream.
	Sequence uint64 `json:"seq"`
	// At is when a worker took it.
	At time.Time `json:"at"`
}

// IDConflictError says which key holds a job id that was sent for another
// key or event. errors.Is(err, ErrIDConflict) holds for it.
type IDConflictError struct {
	// ID is the job id.
	ID string
	// Held is the job holding the id. Held.Sequence is 0 and Held.At the
	// time it was stored when no worker has taken it yet.
	Held Job
	// Key and Event are those of the refused event.
	Key, Event string
	// Stored says the refused event was stored before the conflict was
	// found (PublishAsync); the worker dead-letters it as id_conflict.
	Stored bool
}

// Error names the key and event that hold the id.
func (e *IDConflictError) Error() string {
	s := fmt.Sprintf("%v: job id %q is held by key %s (event %s), not %s (event %s)",
		ErrIDConflict, e.ID, e.Held.Key, e.Held.Event, e.Key, e.Event)
	if e.Stored {
		return s + "; the event was stored and will be dead-lettered as id_conflict"
	}
	return s + "; nothing stored, use another id"
}

// Unwrap makes errors.Is(err, ErrIDConflict) true.
func (e *IDConflictError) Unwrap() error { return ErrIDConflict }

// jobKey is the bucket key of a job id: the id itself when it is a safe KV
// key of up to 128 characters of A-Z a-z 0-9 - _, or else "=" and the
// unpadded base64url SHA-256 of the id. The two forms cannot collide: "="
// is not among the characters the first may hold.
func jobKey(id string) string {
	if len(id) > 0 && len(id) <= 128 {
		ok := true
		for i := 0; i < len(id) && ok; i++ {
			c := id[i]
			ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		}
		if ok {
			return id
		}
	}
	sum := sha256.Sum256([]byte(id))
	return "=" + base64.RawURLEncoding.EncodeToString(sum[:])
}

func marshalJob(j *Job) []byte {
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

// jobTimeout bounds a look-up or claim whose context has no deadline.
const jobTimeout = 5 * time.Second

// Job returns the claim of job id in workflow: which event took it, and
// when; ErrNoJob if none holds it (the workflow may also be one no worker
// with job claims has provisioned).
func (c *Conn) Job(ctx context.Context, workflow, id string) (Job, error) {
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return Job{}, err
	}
	return getJob(ctx, c.nc, workflow, id)
}

// getJob reads a claim with one direct get of the bucket's last message on
// the id's subject: one round trip, no stream look-up first.
func getJob(ctx context.Context, nc *nats.Conn, workflow, id string) (Job, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, jobTimeout)
		defer cancel()
	}
	resp, err := nc.RequestWithContext(ctx, jobGetSubject(workflow, id), nil)
	return jobOf(id, resp, err)
}

func jobGetSubject(workflow, id string) string {
	bucket := contract.JobsBucket(workflow)
	return "$JS.API.DIRECT.GET.KV_" + bucket + ".$KV." + bucket + "." + jobKey(id)
}

// jobOf reads a direct get's answer.
func jobOf(id string, resp *nats.Msg, err error) (Job, error) {
	if errors.Is(err, nats.ErrNoResponders) {
		// No bucket: a workflow provisioned before job claims existed.
		return Job{}, fmt.Errorf("queue: job %s: %w", id, ErrNoJob)
	}
	if err != nil {
		return Job{}, fmt.Errorf("queue: job %s: %w", id, err)
	}
	if len(resp.Data) == 0 {
		switch st := resp.Header.Get("Status"); st {
		case "404":
			return Job{}, fmt.Errorf("queue: job %s: %w", id, ErrNoJob)
		case "503":
			return Job{}, fmt.Errorf("queue: job %s: %w", id, ErrNoJob) // no responders, as above
		case "":
		default:
			return Job{}, fmt.Errorf("queue: job %s: %s %s", id, st, resp.Header.Get("Description"))
		}
	}
	if op := resp.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return Job{}, fmt.Errorf("queue: job %s: %w", id, ErrNoJob)
	}
	j := Job{ID: id}
	if err := json.Unmarshal(resp.Data, &j); err != nil {
		return Job{}, fmt.Errorf("queue: job %s: bad claim %q: %w", id, resp.Data, err)
	}
	return j, nil
}

type heldResult struct {
	job Job
	err error
}

// lookUpJob sends the look-up of id's claim; its answer comes on the
// channel returned.
func (c *Conn) lookUpJob(workflow, id string) <-chan muxReply {
	ch := make(chan muxReply, 1)
	if _, err := c.mux.send(c.nc, nats.NewMsg(jobGetSubject(workflow, id)), ch, 0, jobTimeout); err != nil {
		ch <- muxReply{} // as if unanswered: Wait goes on without it
	}
	return ch
}

// ClaimOutcome is what claiming a job id found.
type ClaimOutcome int

const (
	// Claimed: the event holds the id: it created the claim now, or it did
	// before (a redelivery of the same event, same sequence). Apply it.
	Claimed ClaimOutcome = iota
	// Duplicate: another event of the same key and event name holds the
	// id. Do not apply it.
	Duplicate
	// Conflict: an event of another key, or another event name, holds the
	// id. Do not apply it.
	Conflict
)

// Claim is the result of claiming one job id.
type Claim struct {
	// Outcome is meaningful when Err is nil.
	Outcome ClaimOutcome
	// Held is the job holding the id: the one claimed for Claimed.
	Held Job
	// Err says why the claim could not be made or read (a timeout, no
	// server): the event must be handed back, not applied.
	Err error
}

// Jobs is a workflow's job bucket, as the worker uses it to claim job ids.
type Jobs struct {
	nc       *nats.Conn
	mux      *replyMux
	workflow string
	prefix   string // "$KV.<bucket>."
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
	return &Jobs{nc: c.nc, mux: &c.mux, workflow: workflow, prefix: "$KV." + contract.JobsBucket(workflow) + "."}, nil
}

// Claim claims each job id of jobs (ID, Key, Event, Sequence and At set) for
// its event: it creates the id's entry if there is none. The creates are
// sent at once and then awaited, and so are the reads of the ids found held,
// so a batch costs about one round trip (two with ids held). Results are in
// the order of jobs.
//
// Each round trip is bounded by ctx's deadline or, without one, by 5s.
func (j *Jobs) Claim(ctx context.Context, jobs []Job) []Claim {
	// Not context.WithTimeout: this runs for every batch of every key, and
	// a timer is cheaper than a context.
	timeout := jobTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	res := make([]Claim, len(jobs))
	var held []int // the jobs whose id is held: read what holds it
	j.roundTrip(ctx, len(jobs), timeout, func(i int) *nats.Msg {
		m := nats.NewMsg(j.prefix + jobKey(jobs[i].ID))
		m.Data = marshalJob(&jobs[i])
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0") // create only
		return m
	}, func(i int, m *nats.Msg, err error) {
		if err == nil {
			if noResponders(m) {
				err = nats.ErrNoResponders
			} else if _, err = parsePubAck(m.Data); err == nil {
				res[i] = Claim{Outcome: Claimed, Held: jobs[i]}
				return
			} else if errors.Is(casError("", err), ErrConflict) {
				held = append(held, i)
				return
			}
		}
		res[i].Err = fmt.Errorf("queue: claim job %s: %w", jobs[i].ID, err)
	})
	j.roundTrip(ctx, len(held), timeout, func(k int) *nats.Msg {
		return nats.NewMsg(jobGetSubject(j.workflow, jobs[held[k]].ID))
	}, func(k int, m *nats.Msg, err error) {
		i := held[k]
		h, err := jobOf(jobs[i].ID, m, err)
		if err != nil {
			// ErrNoJob here: the claim expired between the create and
			// the read. Trying again later creates it.
			res[i].Err = fmt.Errorf("queue: claim job %s: %w", jobs[i].ID, err)
			return
		}
		res[i] = compareHeld(&jobs[i], h)
	})
	return res
}

// roundTrip sends the n requests that msg makes and passes each one's reply
// to got, in the order they come (err: none came, or none could be sent).
func (j *Jobs) roundTrip(ctx context.Context, n int, timeout time.Duration, msg func(i int) *nats.Msg, got func(i int, m *nats.Msg, err error)) {
	if n == 0 {
		return
	}
	ch := make(chan muxReply, n)
	tokens := make([]string, n)
	waiting := 0
	t := time.NewTimer(timeout)
	defer t.Stop()
	for i := range n {
		tok, err := j.mux.send(j.nc, msg(i), ch, i, timeout)
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
			tokens[r.i] = ""
			if r.msg == nil {
				got(r.i, nil, context.DeadlineExceeded)
				continue
			}
			got(r.i, r.msg, nil)
		case <-ctx.Done():
			j.giveUp(tokens, got, ctx.Err())
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
			j.mux.forget(tok)
			got(i, nil, err)
		}
	}
}

// compareHeld says what the claim h holding want's id means for want.
func compareHeld(want *Job, h Job) Claim {
	switch {
	case h.Sequence == want.Sequence:
		return Claim{Outcome: Claimed, Held: h}
	case h.Key == want.Key && h.Event == want.Event:
		return Claim{Outcome: Duplicate, Held: h}
	default:
		return Claim{Outcome: Conflict, Held: h}
	}
}

// heldAck is Publish's answer for an id that a job holds already.
func heldAck(id, key, event string, held Job) (PubAck, error) {
	if held.Key != key || held.Event != event {
		return PubAck{}, &IDConflictError{ID: id, Held: held, Key: key, Event: event}
	}
	return PubAck{ID: id, Sequence: held.Sequence, Duplicate: true, Key: held.Key, At: held.At, Taken: true}, nil
}

// originalOf finds what a publish that JetStream found a duplicate (within
// the stream's duplicate window) duplicates: seq is the original's sequence.
// While the original waits in the stream, its subject and body say; once a
// worker has taken it (and it is gone from the work queue), its claim does.
func (c *Conn) originalOf(ctx context.Context, workflow, key, event, id string, seq uint64) (PubAck, error) {
	dup := PubAck{ID: id, Sequence: seq, Duplicate: true}
	subject, body, at, err := c.storedEvent(ctx, workflow, seq)
	switch {
	case err == nil:
		var env contract.Envelope
		_ = json.Unmarshal(body, &env) // a malformed original has no event name
		held := Job{ID: id, Key: contract.KeyOfSubject(subject), Event: env.Event, At: at}
		if held.Key != key || held.Event != event {
			return PubAck{}, &IDConflictError{ID: id, Held: held, Key: key, Event: event}
		}
		dup.Key, dup.At = held.Key, held.At
		return dup, nil
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return PubAck{}, fmt.Errorf("queue: original of duplicate job %s: %w", id, err)
	}
	held, err := getJob(ctx, c.nc, workflow, id)
	switch {
	case err == nil:
		return heldAck(id, key, event, held)
	case errors.Is(err, ErrNoJob):
		// Gone and never claimed: dead-lettered before it could be (it
		// was malformed, say). Nothing more is known of it.
		return dup, nil
	}
	return PubAck{}, fmt.Errorf("queue: original of duplicate job %s: %w", id, err)
}

// checkHeld is Wait's answer for an explicit id whose event JetStream
// stored as new (at seq): a claim of another event makes it a duplicate or
// a conflict after all, which the worker will find too.
func (p *PendingPublish) checkHeld(ctx context.Context, seq uint64) (PubAck, error) {
	var r heldResult
	// An answer lost with the connection would never come: wait no longer
	// than a look-up may take.
	t := time.NewTimer(jobTimeout)
	defer t.Stop()
	select {
	case reply := <-p.held:
		if reply.msg == nil {
			r.err = context.DeadlineExceeded
		} else {
			r.job, r.err = jobOf(p.id, reply.msg, nil)
		}
	case <-t.C:
		r.err = context.DeadlineExceeded
	case <-ctx.Done():
		return PubAck{}, fmt.Errorf("queue: publish %s: job id look-up: %w", p.subject, ctx.Err())
	}
	if r.err != nil || r.job.Sequence == seq {
		// No claim (or none could be read: the worker checks again), or
		// the claim of this very event, taken already.
		return PubAck{ID: p.id, Sequence: seq}, nil
	}
	ack, err := heldAck(p.id, p.key, p.event, r.job)
	var conflict *IDConflictError
	if errors.As(err, &conflict) {
		conflict.Stored = true
	}
	return ack, err
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

// storedEvent reads the message at seq of workflow's events stream: one
// request, which a producer's permissions allow (no stream info first).
func (c *Conn) storedEvent(ctx context.Context, workflow string, seq uint64) (subject string, body []byte, at time.Time, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, jobTimeout)
		defer cancel()
	}
	resp, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+contract.EventsStream(workflow), []byte(`{"seq":`+strconv.FormatUint(seq, 10)+`}`))
	if err != nil {
		return "", nil, time.Time{}, err
	}
	var r struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Subject string    `json:"subject"`
			Data    []byte    `json:"data"`
			Time    time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return "", nil, time.Time{}, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, resp.Data)
	}
	switch {
	case r.Error != nil && r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return "", nil, time.Time{}, jetstream.ErrMsgNotFound
	case r.Error != nil:
		return "", nil, time.Time{}, r.Error
	case r.Message == nil:
		return "", nil, time.Time{}, fmt.Errorf("%w: %q", jetstream.ErrInvalidJSAck, resp.Data)
	}
	return r.Message.Subject, r.Message.Data, r.Message.Time, nil
}
