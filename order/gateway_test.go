package order_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/order"
)

func TestSimGatewaySucceeds(t *testing.T) {
	t.Parallel()
	g := order.NewSimGateway(order.SimConfig{})
	ctx := context.Background()
	d, err := g.FetchOrder(ctx, "o-1", "job-1")
	if err != nil || d.ID != "o-1" || d.AmountCents < 100 || d.Items < 1 || d.Currency == "" {
		t.Fatalf("FetchOrder = %+v, %v", d, err)
	}
	if again, _ := g.FetchOrder(ctx, "o-1", "job-2"); again != d {
		t.Errorf("FetchOrder is not deterministic: %+v then %+v", d, again)
	}
	ref, err := g.Authorize(ctx, d, "job-3")
	if err != nil || ref == "" {
		t.Fatalf("Authorize = %q, %v", ref, err)
	}
	if retried, _ := g.Authorize(ctx, d, "job-3"); retried != ref {
		t.Errorf("a retried authorization got a new reference: %q then %q", ref, retried)
	}
	if err := g.Capture(ctx, ref, "job-4"); err != nil {
		t.Errorf("Capture: %v", err)
	}
}

func TestSimGatewayDeclines(t *testing.T) {
	t.Parallel()
	g := order.NewSimGateway(order.SimConfig{FailRate: 1})
	ctx := context.Background()
	_, err1 := g.FetchOrder(ctx, "o-1", "k")
	_, err2 := g.Authorize(ctx, order.Details{ID: "o-1"}, "k")
	err3 := g.Capture(ctx, "pay_1", "k")
	for _, err := range []error{err1, err2, err3} {
		if !errors.Is(err, order.ErrDeclined) {
			t.Errorf("err = %v, want ErrDeclined", err)
		}
	}
}

func TestSimGatewayHonoursContext(t *testing.T) {
	t.Parallel()
	g := order.NewSimGateway(order.SimConfig{Latency: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := g.FetchOrder(ctx, "o-1", "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if err := order.NewSimGateway(order.SimConfig{}).Capture(ctx, "pay_1", "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("without latency: err = %v, want context.Canceled", err)
	}
}

func TestSimGatewaySeededFailures(t *testing.T) {
	t.Parallel()
	outcomes := func() []bool {
		g := order.NewSimGateway(order.SimConfig{FailRate: 0.5, Rand: rand.New(rand.NewPCG(1, 2))})
		var out []bool
		for range 64 {
			out = append(out, g.Capture(context.Background(), "pay_1", "k") == nil)
		}
		return out
	}
	a, b := outcomes(), outcomes()
	fails := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different outcome at call %d", i)
		}
		if !a[i] {
			fails++
		}
	}
	if fails == 0 || fails == len(a) {
		t.Errorf("%d of %d calls failed at FailRate 0.5", fails, len(a))
	}
}

func TestSimGatewayConcurrent(t *testing.T) {
	t.Parallel()
	g := order.NewSimGateway(order.SimConfig{FailRate: 0.5, Rand: rand.New(rand.NewPCG(3, 4))})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_ = g.Capture(context.Background(), "pay_1", "k")
			}
		})
	}
	wg.Wait()
}
