package order_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/internal/natstest"
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

// TestSimGatewayConcurrent: one gateway serves every slot of the worker at
// once. Concurrent calls each draw their outcome from the seeded source once
// (so as many fail as when the same calls run one after another), the fail
// rate holds over many calls, every failure is ErrDeclined, every call takes
// its latency side by side with the others, and calls waiting out their
// latency end when cancelled.
func TestSimGatewayConcurrent(t *testing.T) {
	t.Parallel()
	const goroutines, perGoroutine, rate = 8, 250, 0.3
	const calls = goroutines * perGoroutine
	cfg := func() order.SimConfig {
		return order.SimConfig{FailRate: rate, Rand: rand.New(rand.NewPCG(3, 4))}
	}
	sequential := 0
	g := order.NewSimGateway(cfg())
	for range calls {
		if g.Capture(context.Background(), "pay_1", "k") != nil {
			sequential++
		}
	}

	g = order.NewSimGateway(cfg())
	var declined, other atomic.Int64
	var wrong atomic.Value
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range perGoroutine {
				switch err := g.Capture(context.Background(), "pay_1", "k"); {
				case errors.Is(err, order.ErrDeclined):
					declined.Add(1)
				case err != nil:
					other.Add(1)
					wrong.Store(err)
				}
			}
		})
	}
	natstest.Wait(t, &wg, natstest.Timeout, "the concurrent calls")
	if other.Load() != 0 {
		t.Fatalf("%d calls failed otherwise than declined, e.g. %v", other.Load(), wrong.Load())
	}
	if n := int(declined.Load()); n != sequential {
		t.Errorf("%d of %d concurrent calls declined; the same seed declines %d in sequence", n, calls, sequential)
	}
	// Within 5 standard deviations (about 0.05 here) of the rate.
	if got := float64(declined.Load()) / calls; math.Abs(got-rate) > 0.05 {
		t.Errorf("declined %.3f of %d calls at FailRate %v", got, calls, rate)
	}

	// Latency: every call takes at least it, and calls wait it out side by
	// side, not one after another (which would take 8 latencies; the bound
	// leaves 3 of them for a loaded machine).
	const latency = 500 * time.Millisecond
	g = order.NewSimGateway(order.SimConfig{Latency: latency, FailRate: rate, Rand: rand.New(rand.NewPCG(5, 6))})
	took := make(chan time.Duration, goroutines)
	began := time.Now()
	for range goroutines {
		wg.Go(func() {
			began := time.Now()
			if err := g.Capture(context.Background(), "pay_1", "k"); err != nil && !errors.Is(err, order.ErrDeclined) {
				t.Errorf("Capture: %v", err)
			}
			took <- time.Since(began)
		})
	}
	natstest.Wait(t, &wg, natstest.Timeout, "the calls with latency")
	if d := time.Since(began); d >= goroutines*latency/2 {
		t.Errorf("%d concurrent calls of %s latency took %s: they waited one after another", goroutines, latency, d)
	}
	close(took)
	for d := range took {
		if d < latency {
			t.Errorf("a call took %s, less than its latency %s", d, latency)
		}
	}

	// Calls stuck in an hour's latency end on their cancellation.
	g = order.NewSimGateway(order.SimConfig{Latency: time.Hour, FailRate: rate, Rand: rand.New(rand.NewPCG(7, 8))})
	stuck, unstick := context.WithCancel(context.Background())
	defer unstick()
	ended := make(chan error, goroutines)
	for range goroutines {
		wg.Go(func() { ended <- g.Capture(stuck, "pay_1", "k") })
	}
	unstick()
	natstest.Wait(t, &wg, natstest.Timeout, "the stuck calls to end on their cancellation")
	close(ended)
	for err := range ended {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("a stuck call ended with %v, want context.Canceled", err)
		}
	}
}
