// Package review is a small workflow built only on Orderly's public API, to
// show how to write your own: a document is submitted for review, its
// reviewers are notified (slow work, after the submission is acknowledged),
// and one of them approves or rejects it. A review left alone for
// Config.ReviewTimeout (48h by default) is escalated.
//
//	draft      --submit-->           in_review   notify_reviewers
//	in_review  --notified-->         in_review   (counts the reviewers notified)
//	in_review  --notify_failed-->    draft       (records why; submit again)
//	in_review  --approve/reject-->   approved / rejected
//	in_review  after ReviewTimeout   escalated   (review_timeout)
//	escalated  --approve/reject-->   approved / rejected
//
// approve and reject carry a Decision, and only a reviewer of the document
// may make one (guard_refused otherwise). Every other (state, event) pair is
// rejected with invalid_transition. Its tests use package orderlytest.
package review

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// Workflow is the workflow name, in subjects and bucket names.
const Workflow = "review"

// States of a document.
const (
	Draft     statemachine.State = "draft"
	InReview  statemachine.State = "in_review"
	Approved  statemachine.State = "approved"
	Rejected  statemachine.State = "rejected"
	Escalated statemachine.State = "escalated"
)

// States lists every state of a document, in lifecycle order.
func States() []statemachine.State {
	return []statemachine.State{Draft, InReview, Escalated, Approved, Rejected}
}

// Client events: submit carries a Submission, approve and reject a Decision.
const (
	Submit  statemachine.Event = "submit"
	Approve statemachine.Event = "approve"
	Reject  statemachine.Event = "reject"
)

// Internal events: the outcome of notify_reviewers and the review timeout.
const (
	Notified      statemachine.Event = "notified"
	NotifyFailed  statemachine.Event = "notify_failed"
	ReviewTimeout statemachine.Event = "review_timeout"
)

// ActionNotifyReviewers tells the reviewers about a submitted document.
const ActionNotifyReviewers = "notify_reviewers"

// DefaultReviewTimeout is how long a document may stay in review by default.
const DefaultReviewTimeout = 48 * time.Hour

// Document is what a document carries along with its state.
type Document struct {
	Title     string   `json:"title"`     // from the latest submission
	Author    string   `json:"author"`    // from the latest submission
	Reviewers []string `json:"reviewers"` // who may approve or reject it
	// Notified is how many reviewers were told about the latest submission.
	Notified int `json:"notified,omitempty"`
	// DecidedBy is the reviewer who approved or rejected it.
	DecidedBy string `json:"decided_by,omitempty"`
	// Comment is the decision's comment, or why notifying failed.
	Comment string `json:"comment,omitempty"`
}

// Submission is the data of submit: a title and at least one reviewer.
type Submission struct {
	Title     string   `json:"title"`     // required
	Author    string   `json:"author"`    // optional
	Reviewers []string `json:"reviewers"` // at least one
}

// Decision is the data of approve and reject.
type Decision struct {
	By      string `json:"by"`                // a reviewer of the document
	Comment string `json:"comment,omitempty"` // optional
}

// Notification is what a Notifier sends.
type Notification struct {
	DocumentID string   // the key
	Title      string   // the document's title
	Author     string   // the document's author
	Reviewers  []string // whom to notify
	// IdempotencyKey is the same on every attempt of one notification;
	// pass it on so that reviewers are told once.
	IdempotencyKey string
}

// Notifier tells reviewers that a document waits for them. An error is
// retried with backoff; worker.Permanent(err) gives up at once. Either way,
// a notification that fails for good sends the document back to draft.
type Notifier interface {
	// NotifyReviewers tells n.Reviewers about the document.
	NotifyReviewers(ctx context.Context, n Notification) error
}

// NotifierFunc adapts a function to Notifier.
type NotifierFunc func(ctx context.Context, n Notification) error

// NotifyReviewers calls f.
func (f NotifierFunc) NotifyReviewers(ctx context.Context, n Notification) error { return f(ctx, n) }

// Config tunes the workflow. The zero value is the default.
type Config struct {
	// ReviewTimeout is how long a document may stay in in_review before it
	// is escalated. Default: DefaultReviewTimeout (48h); must not be negative.
	ReviewTimeout time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.ReviewTimeout == 0 {
		c.ReviewTimeout = DefaultReviewTimeout
	}
	return c
}

// NewWorkflow returns the review workflow ready for a worker: the machine
// of cfg with notify_reviewers calling n.
func NewWorkflow(cfg Config, n Notifier) (worker.Workflow, error) {
	m, err := New(cfg)
	if err != nil {
		return worker.Workflow{}, err
	}
	return worker.NewWorkflow(m, map[string]worker.ActionFunc[Document]{
		ActionNotifyReviewers: NotifyReviewers(n),
	})
}

// NotifyReviewers is the notify_reviewers action calling n, for callers that
// assemble the workflow themselves (to wrap the action in a test spy, say).
// Its result, the number of reviewers notified, is the data of notified.
func NotifyReviewers(n Notifier) worker.ActionFunc[Document] {
	return func(ctx context.Context, c worker.ActionCall[Document]) (any, error) {
		err := n.NotifyReviewers(ctx, Notification{
			DocumentID: c.Key, Title: c.Data.Title, Author: c.Data.Author,
			Reviewers: slices.Clone(c.Data.Reviewers), IdempotencyKey: c.IdempotencyKey,
		})
		if err != nil {
			return nil, err
		}
		return notified{Count: len(c.Data.Reviewers)}, nil
	}
}

type notified struct {
	Count int `json:"count"`
}

// New returns the machine of cfg; an error if cfg is invalid.
func New(cfg Config) (*statemachine.Machine[Document], error) {
	return statemachine.New(Definition(cfg))
}

// Definition returns the workflow's definition, for callers that want to
// inspect or extend it before building a machine.
func Definition(cfg Config) statemachine.Definition[Document] {
	cfg = cfg.WithDefaults()
	type T = statemachine.Transition[Document]
	return statemachine.Definition[Document]{
		Name:    Workflow,
		Initial: Draft,
		States: []statemachine.StateDef{
			{Name: Draft},
			{Name: InReview, Timeout: &statemachine.Timeout{After: cfg.ReviewTimeout, Event: ReviewTimeout}},
			{Name: Escalated},
			{Name: Approved, Terminal: true},
			{Name: Rejected, Terminal: true},
		},
		Events: []statemachine.EventDef{
			{Name: Submit, Client: true},
			{Name: Approve, Client: true},
			{Name: Reject, Client: true},
			{Name: Notified},
			{Name: NotifyFailed},
			{Name: ReviewTimeout},
		},
		Actions: []statemachine.ActionDef{
			{Name: ActionNotifyReviewers, OnSuccess: Notified, OnFailure: NotifyFailed},
		},
		Transitions: []T{
			{From: Draft, On: Submit, To: InReview, Update: submit, Actions: []string{ActionNotifyReviewers}},
			{From: InReview, On: Notified, To: InReview, Update: countNotified},
			{From: InReview, On: NotifyFailed, To: Draft, Update: notifyFailed},
			{From: InReview, On: Approve, To: Approved, Guard: byReviewer, Update: decide},
			{From: InReview, On: Reject, To: Rejected, Guard: byReviewer, Update: decide},
			{From: InReview, On: ReviewTimeout, To: Escalated},
			{From: Escalated, On: Approve, To: Approved, Guard: byReviewer, Update: decide},
			{From: Escalated, On: Reject, To: Rejected, Guard: byReviewer, Update: decide},
		},
	}
}

func submit(d Document, in statemachine.Input) (Document, error) {
	var s Submission
	if err := json.Unmarshal(in.Data, &s); err != nil {
		return d, fmt.Errorf("decode submission: %w", err)
	}
	if s.Title == "" || len(s.Reviewers) == 0 {
		return d, errors.New("a submission needs a title and at least one reviewer")
	}
	return Document{Title: s.Title, Author: s.Author, Reviewers: s.Reviewers}, nil
}

func countNotified(d Document, in statemachine.Input) (Document, error) {
	var n notified
	if err := json.Unmarshal(in.Data, &n); err != nil {
		return d, fmt.Errorf("decode notified: %w", err)
	}
	d.Notified = n.Count
	return d, nil
}

// notifyFailed never refuses: a failure refused over its payload would leave
// the document stuck in review.
func notifyFailed(d Document, in statemachine.Input) (Document, error) {
	var f struct {
		Error string `json:"error"`
	}
	d.Comment = "notifying reviewers failed"
	if json.Unmarshal(in.Data, &f) == nil && f.Error != "" {
		d.Comment += ": " + f.Error
	}
	return d, nil
}

// ErrNotReviewer is the guard's refusal of a decision by someone who is not
// a reviewer of the document.
var ErrNotReviewer = errors.New("not a reviewer of the document")

func byReviewer(d Document, in statemachine.Input) error {
	var dec Decision
	if json.Unmarshal(in.Data, &dec) != nil || !slices.Contains(d.Reviewers, dec.By) {
		return ErrNotReviewer
	}
	return nil
}

func decide(d Document, in statemachine.Input) (Document, error) {
	var dec Decision
	if err := json.Unmarshal(in.Data, &dec); err != nil {
		return d, fmt.Errorf("decode decision: %w", err)
	}
	d.DecidedBy, d.Comment = dec.By, dec.Comment
	return d, nil
}
