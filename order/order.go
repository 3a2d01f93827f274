package order

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/orderly-dev/orderly/statemachine"
)

// Workflow is the workflow name, used in subjects and bucket names.
const Workflow = "order"

// States of an order.
const (
	Idle            statemachine.State = "idle"
	Processing      statemachine.State = "processing"
	AwaitingPayment statemachine.State = "awaiting_payment"
	Completed       statemachine.State = "completed"
	Failed          statemachine.State = "failed"
)

// States lists every state of an order, in lifecycle order.
func States() []statemachine.State {
	return []statemachine.State{Idle, Processing, AwaitingPayment, Completed, Failed}
}

// Client events: what other services may send.
const (
	StartProcessing statemachine.Event = "start_processing"
	RequestPayment  statemachine.Event = "request_payment"
	ConfirmPayment  statemachine.Event = "confirm_payment"
)

// Internal events: action outcomes, the payment timeout and the payment
// reminder.
const (
	OrderFetched        statemachine.Event = "order_fetched"
	FetchFailed         statemachine.Event = "fetch_failed"
	PaymentAuthorized   statemachine.Event = "payment_authorized"
	AuthorizationFailed statemachine.Event = "authorization_failed"
	PaymentCaptured     statemachine.Event = "payment_captured"
	CaptureFailed       statemachine.Event = "capture_failed"
	PaymentTimeout      statemachine.Event = "payment_timeout"
	PaymentReminder     statemachine.Event = "payment_reminder"
)

// Actions: the slow work, each a PaymentGateway call.
const (
	ActionFetchOrder       = "fetch_order"
	ActionAuthorizePayment = "authorize_payment"
	ActionCapturePayment   = "capture_payment"
)

// DefaultPaymentTimeout is how long an order may await payment by default.
const DefaultPaymentTimeout = 15 * time.Minute

// DefaultPaymentReminder is how often an order awaiting payment is reminded
// by default.
const DefaultPaymentReminder = 5 * time.Minute

// ErrOrderNotFetched is the guard's refusal of request_payment before the
// order has been fetched. A sentinel, so that refusing allocates nothing.
var ErrOrderNotFetched = errors.New("order not fetched yet")

// Data is what an order carries along with its state.
type Data struct {
	Order         *Details `json:"order,omitempty"`
	PaymentRef    string   `json:"payment_ref,omitempty"`
	FailureReason string   `json:"failure_reason,omitempty"`
	// Reminders counts the payment reminders sent while awaiting payment.
	Reminders int `json:"reminders,omitempty"`
}

// Details is an order as the gateway knows it; the payload of order_fetched.
type Details struct {
	ID          string `json:"id"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
	Items       int    `json:"items"`
}

// Authorization is the payload of payment_authorized.
type Authorization struct {
	PaymentRef string `json:"payment_ref"`
}

// Config tunes the workflow. The zero value is the default.
type Config struct {
	// PaymentTimeout is how long an order may stay in awaiting_payment
	// before it fails. Default DefaultPaymentTimeout (15m); must not be negative.
	PaymentTimeout time.Duration
	// PaymentReminder is how often an order awaiting payment is reminded
	// (payment_reminder, counted in Data.Reminders), from when it began to
	// await it. Default DefaultPaymentReminder (5m); negative: no reminders;
	// otherwise a whole number of seconds.
	PaymentReminder time.Duration
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.PaymentTimeout == 0 {
		c.PaymentTimeout = DefaultPaymentTimeout
	}
	if c.PaymentReminder == 0 {
		c.PaymentReminder = DefaultPaymentReminder
	}
	return c
}

// New returns the order machine. The definition is static and tested, so it
// only panics for an invalid cfg (a negative PaymentTimeout, a
// PaymentReminder that is not a whole number of seconds).
func New(cfg Config) *statemachine.Machine[Data] {
	return statemachine.MustNew(Definition(cfg))
}

// Definition returns the order workflow's definition, for callers that want
// to extend or inspect it before building a machine.
func Definition(cfg Config) statemachine.Definition[Data] {
	cfg = cfg.WithDefaults()
	type T = statemachine.Transition[Data]
	awaiting := statemachine.StateDef{Name: AwaitingPayment, Timeout: &statemachine.Timeout{After: cfg.PaymentTimeout, Event: PaymentTimeout}}
	if cfg.PaymentReminder > 0 {
		awaiting.Every = []statemachine.Periodic{statemachine.Every(cfg.PaymentReminder, PaymentReminder)}
	}
	def := statemachine.Definition[Data]{
		Name:    Workflow,
		Initial: Idle,
		States: []statemachine.StateDef{
			{Name: Idle},
			{Name: Processing},
			awaiting,
			{Name: Completed, Terminal: true},
			{Name: Failed, Terminal: true},
		},
		Events: []statemachine.EventDef{
			{Name: StartProcessing, Client: true},
			{Name: RequestPayment, Client: true},
			{Name: ConfirmPayment, Client: true},
			{Name: OrderFetched},
			{Name: FetchFailed},
			{Name: PaymentAuthorized},
			{Name: AuthorizationFailed},
			{Name: PaymentCaptured},
			{Name: CaptureFailed},
			{Name: PaymentTimeout},
			{Name: PaymentReminder},
		},
		Actions: []statemachine.ActionDef{
			{Name: ActionFetchOrder, OnSuccess: OrderFetched, OnFailure: FetchFailed},
			{Name: ActionAuthorizePayment, OnSuccess: PaymentAuthorized, OnFailure: AuthorizationFailed},
			{Name: ActionCapturePayment, OnSuccess: PaymentCaptured, OnFailure: CaptureFailed},
		},
		Transitions: []T{
			{From: Idle, On: StartProcessing, To: Processing, Actions: []string{ActionFetchOrder}},
			{From: Processing, On: OrderFetched, To: Processing, Update: storeOrder},
			{From: Processing, On: FetchFailed, To: Failed, Update: fail("fetch failed")},
			{From: Processing, On: RequestPayment, To: Processing, Guard: orderFetched, Actions: []string{ActionAuthorizePayment}},
			{From: Processing, On: PaymentAuthorized, To: AwaitingPayment, Update: storePaymentRef},
			{From: Processing, On: AuthorizationFailed, To: Failed, Update: fail("authorization failed")},
			{From: AwaitingPayment, On: ConfirmPayment, To: AwaitingPayment, Actions: []string{ActionCapturePayment}},
			{From: AwaitingPayment, On: PaymentCaptured, To: Completed},
			{From: AwaitingPayment, On: CaptureFailed, To: Failed, Update: fail("capture failed")},
			{From: AwaitingPayment, On: PaymentTimeout, To: Failed, Update: fail("payment timed out")},
		},
	}
	if cfg.PaymentReminder > 0 {
		// A reminder is only counted here; a real one would be an action
		// (an email, say), which would hold confirm_payment back while it
		// runs.
		def.Transitions = append(def.Transitions, T{From: AwaitingPayment, On: PaymentReminder, To: AwaitingPayment, Update: remind})
	}
	return def
}

func remind(d Data, _ statemachine.Input) (Data, error) {
	d.Reminders++
	return d, nil
}

// orderFetched keeps the guard even though the runtime defers client events
// while an action is pending: a request_payment sent after a failed or lost
// fetch must still be refused.
func orderFetched(d Data, _ statemachine.Input) error {
	if d.Order == nil {
		return ErrOrderNotFetched
	}
	return nil
}

func storeOrder(d Data, in statemachine.Input) (Data, error) {
	var o Details
	if err := json.Unmarshal(in.Data, &o); err != nil {
		return d, fmt.Errorf("decode order: %w", err)
	}
	if o.ID == "" {
		return d, errors.New("order has no id")
	}
	d.Order = &o
	return d, nil
}

func storePaymentRef(d Data, in statemachine.Input) (Data, error) {
	var a Authorization
	if err := json.Unmarshal(in.Data, &a); err != nil {
		return d, fmt.Errorf("decode authorization: %w", err)
	}
	if a.PaymentRef == "" {
		return d, errors.New("authorization has no payment_ref")
	}
	d.PaymentRef = a.PaymentRef
	return d, nil
}

// fail records why the order failed. It never rejects the event: a failure
// that could be refused over its payload would leave the order stuck, so an
// absent or unreadable payload just falls back to the generic reason.
func fail(reason string) func(Data, statemachine.Input) (Data, error) {
	return func(d Data, in statemachine.Input) (Data, error) {
		var f struct {
			Error string `json:"error"`
		}
		d.FailureReason = reason
		if json.Unmarshal(in.Data, &f) == nil && f.Error != "" {
			d.FailureReason += ": " + f.Error
		}
		return d, nil
	}
}
