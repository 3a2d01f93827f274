package order_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"pgregory.net/rapid"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/order"
	sm "github.com/orderly-dev/orderly/statemachine"
)

// model is the order workflow written the way the seed wrote it: one switch.
// It is the reference the table-driven machine must agree with.
func model(s sm.State, d order.Data, in sm.Input) (sm.State, order.Data, string) {
	client := in.Event == order.StartProcessing || in.Event == order.RequestPayment || in.Event == order.ConfirmPayment
	switch {
	case !client && !isInternal(in.Event):
		return s, d, contract.CodeUnknownEvent
	case in.Source == sm.SourceClient && !client:
		return s, d, contract.CodeInternalEvent
	}
	fail := func(reason string) (sm.State, order.Data, string) {
		var f struct{ Error string }
		if json.Unmarshal(in.Data, &f) == nil && f.Error != "" {
			reason += ": " + f.Error
		}
		d.FailureReason = reason
		return order.Failed, d, ""
	}
	switch {
	case s == order.Idle && in.Event == order.StartProcessing:
		return order.Processing, d, ""
	case s == order.Processing && in.Event == order.OrderFetched:
		var o order.Details
		if json.Unmarshal(in.Data, &o) != nil || o.ID == "" {
			return s, d, contract.CodeInvalidData
		}
		d.Order = &o
		return s, d, ""
	case s == order.Processing && in.Event == order.FetchFailed:
		return fail("fetch failed")
	case s == order.Processing && in.Event == order.RequestPayment:
		if d.Order == nil {
			return s, d, contract.CodeGuardRefused
		}
		return s, d, ""
	case s == order.Processing && in.Event == order.PaymentAuthorized:
		var a struct {
			PaymentRef string `json:"payment_ref"`
		}
		if json.Unmarshal(in.Data, &a) != nil || a.PaymentRef == "" {
			return s, d, contract.CodeInvalidData
		}
		d.PaymentRef = a.PaymentRef
		return order.AwaitingPayment, d, ""
	case s == order.Processing && in.Event == order.AuthorizationFailed:
		return fail("authorization failed")
	case s == order.AwaitingPayment && in.Event == order.ConfirmPayment:
		return s, d, ""
	case s == order.AwaitingPayment && in.Event == order.PaymentCaptured:
		return order.Completed, d, ""
	case s == order.AwaitingPayment && in.Event == order.CaptureFailed:
		return fail("capture failed")
	case s == order.AwaitingPayment && in.Event == order.PaymentTimeout:
		return fail("payment timed out")
	case s == order.AwaitingPayment && in.Event == order.PaymentReminder:
		d.Reminders++
		return s, d, ""
	}
	return s, d, contract.CodeInvalidTransition
}

// acceptedIn lists well-formed inputs the model accepts in state s.
func acceptedIn(s sm.State, d order.Data) []sm.Input {
	var ins []sm.Input
	for _, e := range allEvents {
		in := sm.Input{Event: e, Data: validInputs[e], Source: sm.SourceAction}
		if !isInternal(e) {
			in.Source = sm.SourceClient
		}
		if _, _, code := model(s, d, in); code == "" {
			ins = append(ins, in)
		}
	}
	return ins
}

func isInternal(e sm.Event) bool {
	switch e {
	case order.OrderFetched, order.FetchFailed, order.PaymentAuthorized, order.AuthorizationFailed,
		order.PaymentCaptured, order.CaptureFailed, order.PaymentTimeout, order.PaymentReminder:
		return true
	}
	return false
}

var payloads = []json.RawMessage{
	nil,
	json.RawMessage(`{}`),
	json.RawMessage(`{`),
	json.RawMessage(`{"id":"o-7","amount_cents":99,"currency":"USD","items":1}`),
	json.RawMessage(`{"amount_cents":99}`),
	json.RawMessage(`{"payment_ref":"pay_x"}`),
	json.RawMessage(`{"payment_ref":""}`),
	json.RawMessage(`{"error":"boom"}`),
}

func TestApplyAgreesWithModel(t *testing.T) {
	m := order.New(order.Config{})
	events := append([]sm.Event{"cancel"}, allEvents...)
	rapid.Check(t, func(t *rapid.T) {
		state, data := m.Initial(), order.Data{}
		for i := range rapid.IntRange(1, 30).Draw(t, "steps") {
			in := sm.Input{
				Event:  rapid.SampledFrom(events).Draw(t, "event"),
				Data:   rapid.SampledFrom(payloads).Draw(t, "data"),
				Source: rapid.SampledFrom([]sm.Source{sm.SourceClient, sm.SourceAction, sm.SourceTimer}).Draw(t, "source"),
			}
			// Uniform events would rarely get past processing; mostly steer
			// towards what the model accepts, with a well-formed payload.
			if accepted := acceptedIn(state, data); len(accepted) > 0 && rapid.IntRange(0, 2).Draw(t, "steer") > 0 {
				in = rapid.SampledFrom(accepted).Draw(t, "accepted")
			}
			wantState, wantData, wantCode := model(state, data, in)
			before := snapshot(t, data)

			step, err := m.Apply(state, data, in)

			if got := sm.Code(err); got != wantCode {
				t.Fatalf("step %d: %s --%s--> code %q (%v), model says %q", i, state, in.Event, got, err, wantCode)
			}
			if snapshot(t, data) != before {
				t.Fatalf("step %d: Apply modified its input data", i)
			}
			if err != nil {
				if wantState != state || !reflect.DeepEqual(wantData, data) {
					t.Fatalf("step %d: the model changed state or data on a rejection", i)
				}
				continue
			}
			if m.IsTerminal(state) {
				t.Fatalf("step %d: terminal state %s accepted %s", i, state, in.Event)
			}
			if step.From != state || step.To != wantState || !reflect.DeepEqual(step.Data, wantData) {
				t.Fatalf("step %d: %s --%s--> %s %+v, model says %s %+v", i, state, in.Event, step.To, step.Data, wantState, wantData)
			}
			state, data = step.To, step.Data
		}
	})
}

func snapshot(t *rapid.T, d order.Data) string {
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func FuzzApplyEnvelope(f *testing.F) {
	for _, seed := range []string{
		`{"event":"start_processing"}`,
		`{"event":"order_fetched","data":{"id":"o-1","amount_cents":1234,"currency":"EUR","items":2}}`,
		`{"event":"order_fetched","data":{"id":7}}`,
		`{"event":"payment_authorized","data":{"payment_ref":"pay_1"}}`,
		`{"event":"fetch_failed","data":{"error":"declined"}}`,
		`{"event":"payment_timeout","data":null}`,
		`{"event":"nope","data":[1,2,3]}`,
		`{"event":""}`,
		`{"data":"x"}`,
		`[]`,
	} {
		for src := range 3 {
			f.Add([]byte(seed), uint8(src))
		}
	}
	m := order.New(order.Config{})
	codes := map[string]bool{contract.CodeInvalidTransition: true, contract.CodeGuardRefused: true, contract.CodeUnknownEvent: true, contract.CodeInternalEvent: true, contract.CodeInvalidData: true}
	f.Fuzz(func(t *testing.T, body []byte, src uint8) {
		var env struct {
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}
		if json.Unmarshal(body, &env) != nil {
			return
		}
		in := sm.Input{Event: sm.Event(env.Event), Data: env.Data, Source: sm.Source(src % 3)}
		for _, s := range order.States() {
			for _, d := range []order.Data{{}, typical(s)} {
				step, err := m.Apply(s, d, in)
				if err != nil {
					if !codes[sm.Code(err)] {
						t.Fatalf("%s: unexpected error %v (code %q)", s, err, sm.Code(err))
					}
					continue
				}
				if _, ok := m.State(step.To); !ok {
					t.Fatalf("%s --%s--> undefined state %q", s, in.Event, step.To)
				}
			}
		}
	})
}
