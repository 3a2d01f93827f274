package order_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/order"
	sm "github.com/orderly-dev/orderly/statemachine"
)

var (
	details     = order.Details{ID: "o-1", AmountCents: 1234, Currency: "EUR", Items: 2}
	allEvents   = []sm.Event{order.StartProcessing, order.RequestPayment, order.ConfirmPayment, order.OrderFetched, order.FetchFailed, order.PaymentAuthorized, order.AuthorizationFailed, order.PaymentCaptured, order.CaptureFailed, order.PaymentTimeout, order.PaymentReminder}
	validInputs = map[sm.Event]json.RawMessage{
		order.OrderFetched:        json.RawMessage(`{"id":"o-1","amount_cents":1234,"currency":"EUR","items":2}`),
		order.PaymentAuthorized:   json.RawMessage(`{"payment_ref":"pay_1"}`),
		order.FetchFailed:         json.RawMessage(`{"error":"declined"}`),
		order.AuthorizationFailed: json.RawMessage(`{"error":"declined"}`),
		order.CaptureFailed:       json.RawMessage(`{"error":"declined"}`),
	}
)

// typical returns the data an order normally has in state s.
func typical(s sm.State) order.Data {
	d := details
	switch s {
	case order.Idle:
		return order.Data{}
	case order.Processing:
		return order.Data{Order: &d}
	case order.Failed:
		return order.Data{Order: &d, FailureReason: "fetch failed"}
	default:
		return order.Data{Order: &d, PaymentRef: "pay_1"}
	}
}

type outcome struct {
	to   sm.State // accepted: the new state
	code string   // rejected: the error code
}

func to(s sm.State) outcome      { return outcome{to: s} }
func rej(c string) outcome       { return outcome{code: c} }
func (o outcome) String() string { return string(o.to) + o.code }

// TestEveryPair is the contract: every (state, event) pair of the order
// workflow, sent by a client and by the runtime.
func TestEveryPair(t *testing.T) {
	const (
		inv = contract.CodeInvalidTransition
		ie  = contract.CodeInternalEvent
	)
	tests := []struct {
		from     sm.State
		event    sm.Event
		client   outcome // sent by a client
		internal outcome // sent by an action or timer
	}{
		{order.Idle, order.StartProcessing, to(order.Processing), to(order.Processing)},
		{order.Idle, order.RequestPayment, rej(inv), rej(inv)},
		{order.Idle, order.ConfirmPayment, rej(inv), rej(inv)},
		{order.Idle, order.OrderFetched, rej(ie), rej(inv)},
		{order.Idle, order.FetchFailed, rej(ie), rej(inv)},
		{order.Idle, order.PaymentAuthorized, rej(ie), rej(inv)},
		{order.Idle, order.AuthorizationFailed, rej(ie), rej(inv)},
		{order.Idle, order.PaymentCaptured, rej(ie), rej(inv)},
		{order.Idle, order.CaptureFailed, rej(ie), rej(inv)},
		{order.Idle, order.PaymentTimeout, rej(ie), rej(inv)},
		{order.Idle, order.PaymentReminder, rej(ie), rej(inv)},

		{order.Processing, order.StartProcessing, rej(inv), rej(inv)},
		{order.Processing, order.RequestPayment, to(order.Processing), to(order.Processing)},
		{order.Processing, order.ConfirmPayment, rej(inv), rej(inv)},
		{order.Processing, order.OrderFetched, rej(ie), to(order.Processing)},
		{order.Processing, order.FetchFailed, rej(ie), to(order.Failed)},
		{order.Processing, order.PaymentAuthorized, rej(ie), to(order.AwaitingPayment)},
		{order.Processing, order.AuthorizationFailed, rej(ie), to(order.Failed)},
		{order.Processing, order.PaymentCaptured, rej(ie), rej(inv)},
		{order.Processing, order.CaptureFailed, rej(ie), rej(inv)},
		{order.Processing, order.PaymentTimeout, rej(ie), rej(inv)},
		{order.Processing, order.PaymentReminder, rej(ie), rej(inv)},

		{order.AwaitingPayment, order.StartProcessing, rej(inv), rej(inv)},
		{order.AwaitingPayment, order.RequestPayment, rej(inv), rej(inv)},
		{order.AwaitingPayment, order.ConfirmPayment, to(order.AwaitingPayment), to(order.AwaitingPayment)},
		{order.AwaitingPayment, order.OrderFetched, rej(ie), rej(inv)},
		{order.AwaitingPayment, order.FetchFailed, rej(ie), rej(inv)},
		{order.AwaitingPayment, order.PaymentAuthorized, rej(ie), rej(inv)},
		{order.AwaitingPayment, order.AuthorizationFailed, rej(ie), rej(inv)},
		{order.AwaitingPayment, order.PaymentCaptured, rej(ie), to(order.Completed)},
		{order.AwaitingPayment, order.CaptureFailed, rej(ie), to(order.Failed)},
		{order.AwaitingPayment, order.PaymentTimeout, rej(ie), to(order.Failed)},
		{order.AwaitingPayment, order.PaymentReminder, rej(ie), to(order.AwaitingPayment)},

		{order.Completed, order.StartProcessing, rej(inv), rej(inv)},
		{order.Completed, order.RequestPayment, rej(inv), rej(inv)},
		{order.Completed, order.ConfirmPayment, rej(inv), rej(inv)},
		{order.Completed, order.OrderFetched, rej(ie), rej(inv)},
		{order.Completed, order.FetchFailed, rej(ie), rej(inv)},
		{order.Completed, order.PaymentAuthorized, rej(ie), rej(inv)},
		{order.Completed, order.AuthorizationFailed, rej(ie), rej(inv)},
		{order.Completed, order.PaymentCaptured, rej(ie), rej(inv)},
		{order.Completed, order.CaptureFailed, rej(ie), rej(inv)},
		{order.Completed, order.PaymentTimeout, rej(ie), rej(inv)},
		{order.Completed, order.PaymentReminder, rej(ie), rej(inv)},

		{order.Failed, order.StartProcessing, rej(inv), rej(inv)},
		{order.Failed, order.RequestPayment, rej(inv), rej(inv)},
		{order.Failed, order.ConfirmPayment, rej(inv), rej(inv)},
		{order.Failed, order.OrderFetched, rej(ie), rej(inv)},
		{order.Failed, order.FetchFailed, rej(ie), rej(inv)},
		{order.Failed, order.PaymentAuthorized, rej(ie), rej(inv)},
		{order.Failed, order.AuthorizationFailed, rej(ie), rej(inv)},
		{order.Failed, order.PaymentCaptured, rej(ie), rej(inv)},
		{order.Failed, order.CaptureFailed, rej(ie), rej(inv)},
		{order.Failed, order.PaymentTimeout, rej(ie), rej(inv)},
		{order.Failed, order.PaymentReminder, rej(ie), rej(inv)},
	}
	if want := len(order.States()) * len(allEvents); len(tests) != want {
		t.Fatalf("table has %d pairs, want %d", len(tests), want)
	}
	m := order.New(order.Config{})
	for _, tt := range tests {
		for _, src := range []sm.Source{sm.SourceClient, sm.SourceAction, sm.SourceTimer} {
			want := tt.internal
			if src == sm.SourceClient {
				want = tt.client
			}
			in := sm.Input{Event: tt.event, Data: validInputs[tt.event], Source: src}
			step, err := m.Apply(tt.from, typical(tt.from), in)
			got := to(step.To)
			if err != nil {
				got = rej(sm.Code(err))
			}
			if got != want {
				t.Errorf("%s --%s--> (source %d) = %v (err %v), want %v", tt.from, tt.event, src, got, err, want)
				continue
			}
			var invalid *sm.InvalidTransitionError
			switch want.code {
			case inv:
				if !errors.As(err, &invalid) || invalid.From != tt.from || invalid.Event != tt.event {
					t.Errorf("%s --%s-->: err = %#v, want *InvalidTransitionError", tt.from, tt.event, err)
				}
			case ie:
				if !errors.Is(err, sm.ErrInternalEvent) {
					t.Errorf("%s --%s-->: err = %v, want ErrInternalEvent", tt.from, tt.event, err)
				}
			}
		}
	}
}

// TestHappyPath follows an order from idle to completed and checks what the
// runtime is told to do at each step.
func TestHappyPath(t *testing.T) {
	m := order.New(order.Config{PaymentTimeout: time.Minute})
	steps := []struct {
		in      sm.Input
		to      sm.State
		actions []string
		arm     time.Duration
		cancel  bool
	}{
		{in: sm.Input{Event: order.StartProcessing}, to: order.Processing, actions: []string{order.ActionFetchOrder}},
		{in: sm.Input{Event: order.OrderFetched, Data: validInputs[order.OrderFetched], Source: sm.SourceAction}, to: order.Processing},
		{in: sm.Input{Event: order.RequestPayment}, to: order.Processing, actions: []string{order.ActionAuthorizePayment}},
		{in: sm.Input{Event: order.PaymentAuthorized, Data: validInputs[order.PaymentAuthorized], Source: sm.SourceAction}, to: order.AwaitingPayment, arm: time.Minute},
		{in: sm.Input{Event: order.ConfirmPayment}, to: order.AwaitingPayment, actions: []string{order.ActionCapturePayment}},
		{in: sm.Input{Event: order.PaymentCaptured, Source: sm.SourceAction}, to: order.Completed, cancel: true},
	}
	state, data := m.Initial(), order.Data{}
	for _, s := range steps {
		step, err := m.Apply(state, data, s.in)
		if err != nil {
			t.Fatalf("%s --%s-->: %v", state, s.in.Event, err)
		}
		var actions []string
		for _, a := range step.Actions {
			actions = append(actions, a.Name)
		}
		var arm time.Duration
		if step.Arm != nil {
			arm = step.Arm.After
			if step.Arm.Event != order.PaymentTimeout {
				t.Errorf("arms %q", step.Arm.Event)
			}
		}
		if step.To != s.to || !reflect.DeepEqual(actions, s.actions) || arm != s.arm || step.Cancel != s.cancel {
			t.Errorf("%s --%s--> %s actions %v arm %v cancel %v; want %s %v %v %v",
				state, s.in.Event, step.To, actions, arm, step.Cancel, s.to, s.actions, s.arm, s.cancel)
		}
		state, data = step.To, step.Data
	}
	want := order.Data{Order: &details, PaymentRef: "pay_1"}
	if !reflect.DeepEqual(data, want) {
		t.Errorf("data = %+v, want %+v", data, want)
	}
}

func TestFailureReasons(t *testing.T) {
	m := order.New(order.Config{})
	tests := []struct {
		from sm.State
		in   sm.Input
		want string
	}{
		{order.Processing, sm.Input{Event: order.FetchFailed, Data: validInputs[order.FetchFailed]}, "fetch failed: declined"},
		{order.Processing, sm.Input{Event: order.FetchFailed, Data: json.RawMessage(`garbage`)}, "fetch failed"},
		{order.Processing, sm.Input{Event: order.AuthorizationFailed}, "authorization failed"},
		{order.AwaitingPayment, sm.Input{Event: order.CaptureFailed, Data: validInputs[order.CaptureFailed]}, "capture failed: declined"},
		{order.AwaitingPayment, sm.Input{Event: order.PaymentTimeout, Source: sm.SourceTimer}, "payment timed out"},
	}
	for _, tt := range tests {
		tt.in.Source = max(tt.in.Source, sm.SourceAction)
		step, err := m.Apply(tt.from, typical(tt.from), tt.in)
		if err != nil || step.To != order.Failed || step.Data.FailureReason != tt.want || step.Cancel != (tt.from == order.AwaitingPayment) {
			t.Errorf("%s --%s--> %s %q cancel %v (err %v), want failed %q", tt.from, tt.in.Event, step.To, step.Data.FailureReason, step.Cancel, err, tt.want)
		}
	}
}

func TestRejections(t *testing.T) {
	m := order.New(order.Config{})

	_, err := m.Apply(order.Processing, order.Data{}, sm.Input{Event: order.RequestPayment})
	var ge *sm.GuardError
	if !errors.As(err, &ge) || sm.Code(err) != contract.CodeGuardRefused || !errors.Is(err, order.ErrOrderNotFetched) {
		t.Errorf("request_payment before the fetch: %v, want guard_refused: order not fetched yet", err)
	}

	for _, in := range []sm.Input{
		{Event: order.OrderFetched, Data: json.RawMessage(`{"id":`)},
		{Event: order.OrderFetched, Data: json.RawMessage(`{"amount_cents":5}`)},
		{Event: order.OrderFetched},
		{Event: order.PaymentAuthorized, Data: json.RawMessage(`{}`)},
		{Event: order.PaymentAuthorized, Data: json.RawMessage(`[1]`)},
	} {
		in.Source = sm.SourceAction
		if _, err := m.Apply(order.Processing, typical(order.Processing), in); !errors.Is(err, sm.ErrInvalidData) {
			t.Errorf("%s %s: err = %v, want invalid_data", in.Event, in.Data, err)
		}
	}

	if _, err := m.Apply(order.Idle, order.Data{}, sm.Input{Event: "cancel"}); sm.Code(err) != contract.CodeUnknownEvent {
		t.Errorf("unknown event: %v", err)
	}
	if _, err := m.Apply("shipped", order.Data{}, sm.Input{Event: order.StartProcessing}); sm.Code(err) != contract.CodeUnknownState {
		t.Errorf("unknown state: %v", err)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  order.Config
		want time.Duration
	}{{order.Config{}, 15 * time.Minute}, {order.Config{PaymentTimeout: time.Second}, time.Second}} {
		s, _ := order.New(tc.cfg).State(order.AwaitingPayment)
		if s.Timeout.After != tc.want {
			t.Errorf("New(%+v) timeout = %v, want %v", tc.cfg, s.Timeout.After, tc.want)
		}
	}
	if _, err := sm.New(order.Definition(order.Config{PaymentTimeout: -time.Second})); err == nil {
		t.Error("a negative PaymentTimeout was accepted")
	}
}

// TestPeriodicWorkPaymentReminder: an order awaiting payment is reminded
// every PaymentReminder (5m by default), each reminder counted; a negative
// PaymentReminder turns reminders off.
func TestPeriodicWorkPaymentReminder(t *testing.T) {
	for _, tc := range []struct {
		cfg  order.Config
		want []sm.Periodic
	}{
		{order.Config{}, []sm.Periodic{sm.Every(5*time.Minute, order.PaymentReminder)}},
		{order.Config{PaymentReminder: time.Minute}, []sm.Periodic{sm.Every(time.Minute, order.PaymentReminder)}},
		{order.Config{PaymentReminder: -1}, nil},
	} {
		m := order.New(tc.cfg)
		s, _ := m.State(order.AwaitingPayment)
		if !reflect.DeepEqual(s.Every, tc.want) {
			t.Errorf("New(%+v): Every = %v, want %v", tc.cfg, s.Every, tc.want)
		}
		d := typical(order.AwaitingPayment)
		step, err := m.Apply(order.AwaitingPayment, d, sm.Input{Event: order.PaymentReminder, Source: sm.SourceTimer})
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("New(%+v): a reminder was applied with reminders off", tc.cfg)
		case tc.want != nil && (err != nil || step.To != order.AwaitingPayment || step.Data.Reminders != 1):
			t.Errorf("New(%+v): reminder: %+v, %v", tc.cfg, step, err)
		}
	}
	if _, err := sm.New(order.Definition(order.Config{PaymentReminder: 1500 * time.Millisecond})); err == nil {
		t.Error("a PaymentReminder of 1.5s was accepted")
	}
}

func TestStatesAndDiagram(t *testing.T) {
	m := order.New(order.Config{})
	var defined []sm.State
	for _, s := range m.States() {
		defined = append(defined, s.Name)
	}
	if !reflect.DeepEqual(defined, order.States()) {
		t.Errorf("States() = %v, definition has %v", order.States(), defined)
	}
	got := m.Mermaid()
	for _, want := range []string{
		"[*] --> idle",
		"idle --> processing: start_processing / fetch_order",
		"processing --> processing: order_fetched (fetch_order ok)",
		"processing --> processing: request_payment [guarded] / authorize_payment",
		"awaiting_payment --> failed: payment_timeout (after 15m0s)",
		"awaiting_payment --> awaiting_payment: payment_reminder (every 5m0s)",
		"completed --> [*]",
		"failed --> [*]",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Mermaid lacks %q:\n%s", want, got)
		}
	}
}
