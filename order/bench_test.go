package order_test

import (
	"testing"

	"github.com/orderly-dev/orderly/order"
	sm "github.com/orderly-dev/orderly/statemachine"
)

// hotPath is a cycle of accepted events whose guards and updates do not
// allocate: what the runtime applies for most client events.
var hotPath = []struct {
	from sm.State
	in   sm.Input
}{
	{order.Idle, sm.Input{Event: order.StartProcessing}},
	{order.Processing, sm.Input{Event: order.RequestPayment}},
	{order.AwaitingPayment, sm.Input{Event: order.ConfirmPayment}},
	{order.AwaitingPayment, sm.Input{Event: order.PaymentCaptured, Source: sm.SourceAction}},
}

func BenchmarkApply(b *testing.B) {
	m := order.New(order.Config{})
	data := typical(order.AwaitingPayment)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h := hotPath[i%len(hotPath)]
		if _, err := m.Apply(h.from, data, h.in); err != nil {
			b.Fatal(err)
		}
	}
}

func TestApplyDoesNotAllocate(t *testing.T) {
	m := order.New(order.Config{})
	data := typical(order.AwaitingPayment)
	allocs := testing.AllocsPerRun(1000, func() {
		for _, h := range hotPath {
			if _, err := m.Apply(h.from, data, h.in); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("Apply allocates %v times per %d events, want 0", allocs, len(hotPath))
	}
}
