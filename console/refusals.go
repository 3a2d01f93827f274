package console

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/contract"
)

// RefusedError is a publish or a subscription that the NATS server refused
// the console's connection: its user lacks the permission.
type RefusedError struct {
	Subscribe bool   // a subscription; otherwise a publish (or a request)
	Subject   string // what was refused
}

// Error says what was refused.
func (e *RefusedError) Error() string {
	if e.Subscribe {
		return fmt.Sprintf("nats: permissions violation for a subscription to %q", e.Subject)
	}
	return fmt.Sprintf("nats: permissions violation for a publish to %q", e.Subject)
}

// Unwrap makes a RefusedError nats.ErrPermissionViolation to errors.Is.
func (e *RefusedError) Unwrap() error { return nats.ErrPermissionViolation }

var violation = regexp.MustCompile(`Permissions Violation for (Publish|Subscription) to "([^"]*)"`)

// refusalOf returns the refusal err reports, if it is one.
func refusalOf(err error) (*RefusedError, bool) {
	if err == nil || !errors.Is(err, nats.ErrPermissionViolation) {
		return nil, false
	}
	m := violation.FindStringSubmatch(err.Error())
	if m == nil {
		return nil, false
	}
	return &RefusedError{Subscribe: m[1] == "Subscription", Subject: m[2]}, true
}

// Refusals learns of the server's refusals on the console's connection. A
// NATS server answers a publish, a request or a subscription that the
// connection's user may not make by dropping it and sending a
// "Permissions Violation" that nats.go hands to the connection's error
// handler and nowhere else: the request itself would only time out. Give
// Note every error of that handler (queue.Config.OnError) and the console
// says at once, and plainly, what its user may not do.
//
// The zero value is not usable; make one with NewRefusals. It is safe for
// concurrent use.
type Refusals struct {
	mu      sync.Mutex
	next    uint64
	waiters map[uint64]refusalWaiter
}

type refusalWaiter struct {
	match func(*RefusedError) bool
	tell  func(*RefusedError) // must not block
}

// NewRefusals returns a Refusals to give to Config.Refusals and to the
// connection's error handler.
func NewRefusals() *Refusals {
	return &Refusals{waiters: map[uint64]refusalWaiter{}}
}

// Note takes an error that the connection's error handler got; every error
// but a permissions violation is ignored. It does not block. A refusal that
// nothing of the console awaits (a request made elsewhere on a shared
// connection) is dropped.
func (r *Refusals) Note(err error) {
	e, ok := refusalOf(err)
	if r == nil || !ok {
		return
	}
	r.mu.Lock()
	var tell []func(*RefusedError)
	for _, w := range r.waiters {
		if w.match(e) {
			tell = append(tell, w.tell)
		}
	}
	r.mu.Unlock()
	for _, f := range tell {
		f(e)
	}
}

// watch calls tell with each refusal that match accepts until stop is
// called.
func (r *Refusals) watch(match func(*RefusedError) bool, tell func(*RefusedError)) (stop func()) {
	r.mu.Lock()
	id := r.next
	r.next++
	r.waiters[id] = refusalWaiter{match: match, tell: tell}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.waiters, id)
		r.mu.Unlock()
	}
}

// try runs f with a context that ends as soon as the server refuses the
// console's connection a publish on a subject of workflow wf, and then
// returns that *RefusedError rather than f's (a context's end): a refused
// request fails at once and says why, instead of timing out. Without
// Config.Refusals it is f(ctx).
func (c *Console) try(ctx context.Context, wf string, f func(context.Context) error) error {
	if c.cfg.Refusals == nil {
		return f(ctx)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := c.cfg.Refusals.watch(func(e *RefusedError) bool { return !e.Subscribe && ofWorkflow(wf, e.Subject) },
		func(e *RefusedError) { cancel(e) })
	defer stop()
	err := f(ctx)
	var re *RefusedError
	if err != nil && errors.As(context.Cause(ctx), &re) {
		return re
	}
	return err
}

// ofWorkflow reports whether subject is one of workflow wf's: one of its
// own (orderly.<kind>.<wf>.…), a write to one of its buckets ($KV.<bucket>.…)
// or a JetStream API request about one of its streams.
func ofWorkflow(wf, subject string) bool {
	toks := strings.Split(subject, ".")
	if len(toks) >= 3 && toks[0] == contract.Namespace && toks[2] == wf {
		return true
	}
	buckets := []string{contract.StateBucket(wf), contract.JobsBucket(wf), contract.MembersBucket(wf)}
	if len(toks) >= 2 && toks[0] == "$KV" && slices.Contains(buckets, toks[1]) {
		return true
	}
	if len(toks) < 3 || toks[0] != "$JS" || toks[1] != "API" {
		return false
	}
	streams := []string{
		contract.EventsStream(wf), contract.DeadLetterStream(wf), contract.TimersStream(wf),
		contract.HistoryStream(wf), contract.IndexStream(wf), contract.SchedulesStream(wf),
	}
	for _, b := range buckets {
		streams = append(streams, "KV_"+b)
	}
	for _, t := range toks[2:] {
		if slices.Contains(streams, t) {
			return true
		}
	}
	return false
}

// DefaultPermissionHelp is Config.PermissionHelp's default.
const DefaultPermissionHelp = "give the console a NATS connection of such a user (see \"Permissions\" in docs/operations.md)"

// explain says what went wrong, for a page: plainly when the server refused
// the console's user a permission, else err's own words.
func (c *Console) explain(err error) string {
	var e *RefusedError
	if !errors.As(err, &e) {
		return err.Error()
	}
	return c.refusal(e)
}

// refusal says plainly what the console's NATS user may not do, and what
// to do about it.
func (c *Console) refusal(e *RefusedError) string {
	what := "do this"
	s := e.Subject
	switch {
	case e.Subscribe && strings.HasPrefix(s, contract.Namespace+".status."):
		what = "follow the statuses of keys as they are published"
	case strings.HasPrefix(s, contract.Namespace+".events."):
		what = "send events"
	case strings.Contains(s, "_DLQ_"):
		what = "read or replay dead letters"
	case strings.HasPrefix(s, contract.Namespace+".schedules.") || strings.Contains(s, "_SCHEDULES_") || strings.Contains(s, ".sched."):
		what = "read or change delayed events and schedules"
	}
	verb := "a publish to"
	if e.Subscribe {
		verb = "a subscription to"
	}
	return fmt.Sprintf("The console's NATS user may not %s: the server refused it %s %q. The console needs a user with the operator role: %s.",
		what, verb, s, c.cfg.PermissionHelp)
}
