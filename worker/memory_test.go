package worker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/worker"
)

// TestMemoryLimitSizesBounds: the bounds left at zero are sized to the
// memory limit, explicit ones are kept, and what cannot fit is warned of.
func TestMemoryLimitSizesBounds(t *testing.T) {
	t.Parallel()
	const mi = 1 << 20
	fixed := worker.Config{}.WithDefaults()
	tests := []struct {
		name      string
		cfg       worker.Config
		workflows int
		check     func(t *testing.T, c worker.Config, p worker.MemoryPlan)
		warn      bool
	}{{
		name: "no limit: the fixed defaults",
		cfg:  worker.Config{},
		check: func(t *testing.T, c worker.Config, _ worker.MemoryPlan) {
			if c.MaxActors != 100_000 || c.Batch != 256 || c.MaxInFlight != 512 || c.Mailbox != 64 {
				t.Errorf("got MaxActors %d, Batch %d, MaxInFlight %d, Mailbox %d; want the fixed defaults", c.MaxActors, c.Batch, c.MaxInFlight, c.Mailbox)
			}
		},
	}, {
		name: "512Mi, the manifest's: the fixed defaults fit",
		cfg:  worker.Config{MemoryLimit: 512 * mi},
		check: func(t *testing.T, c worker.Config, _ worker.MemoryPlan) {
			if c.MaxActors != fixed.MaxActors || c.MaxInFlight != fixed.MaxInFlight || c.Batch != fixed.Batch || c.Mailbox != fixed.Mailbox {
				t.Errorf("MaxActors %d, MaxInFlight %d, Batch %d, Mailbox %d; want the fixed defaults", c.MaxActors, c.MaxInFlight, c.Batch, c.Mailbox)
			}
		},
	}, {
		name: "4Gi: the fixed defaults, never more",
		cfg:  worker.Config{MemoryLimit: 4 << 30},
		check: func(t *testing.T, c worker.Config, _ worker.MemoryPlan) {
			if c.MaxActors != fixed.MaxActors || c.MaxInFlight != fixed.MaxInFlight {
				t.Errorf("MaxActors %d, MaxInFlight %d; want %d, %d", c.MaxActors, c.MaxInFlight, fixed.MaxActors, fixed.MaxInFlight)
			}
		},
	}, {
		name: "256Mi: fewer actors and events",
		cfg:  worker.Config{MemoryLimit: 256 * mi},
		check: func(t *testing.T, c worker.Config, _ worker.MemoryPlan) {
			if c.MaxActors >= 100_000 || c.MaxActors < 20_000 {
				t.Errorf("MaxActors %d, want fewer than 100,000 and at least 20,000", c.MaxActors)
			}
			if c.MaxInFlight >= 512 || c.MaxInFlight < c.Batch || c.Batch != 256 || c.Mailbox != 64 {
				t.Errorf("MaxInFlight %d, Batch %d, Mailbox %d; want MaxInFlight under 512, Batch 256, Mailbox 64", c.MaxInFlight, c.Batch, c.Mailbox)
			}
		},
	}, {
		name: "64Mi: batches and mailboxes within MaxInFlight",
		cfg:  worker.Config{MemoryLimit: 64 * mi},
		check: func(t *testing.T, c worker.Config, _ worker.MemoryPlan) {
			if c.MaxInFlight >= 64 || c.Batch > c.MaxInFlight || c.Mailbox > c.MaxInFlight {
				t.Errorf("MaxInFlight %d, Batch %d, Mailbox %d; want MaxInFlight under 64 and the others within it", c.MaxInFlight, c.Batch, c.Mailbox)
			}
			if c.MaxActors >= 10_000 {
				t.Errorf("MaxActors %d at 64 MiB", c.MaxActors)
			}
		},
	}, {
		name:      "two workflows share the limit",
		cfg:       worker.Config{MemoryLimit: 256 * mi},
		workflows: 2,
		check: func(t *testing.T, c worker.Config, _ worker.MemoryPlan) {
			one, _ := worker.Config{MemoryLimit: 256 * mi}.Sized(1)
			if c.MaxActors > one.MaxActors*6/10 || c.MaxInFlight > one.MaxInFlight*6/10 {
				t.Errorf("MaxActors %d, MaxInFlight %d per workflow with two; %d, %d with one", c.MaxActors, c.MaxInFlight, one.MaxActors, one.MaxInFlight)
			}
		},
	}, {
		name: "explicit bounds win",
		cfg:  worker.Config{MemoryLimit: 256 * mi, MaxActors: 1000, Batch: 32, Mailbox: 5},
		check: func(t *testing.T, c worker.Config, _ worker.MemoryPlan) {
			if c.MaxActors != 1000 || c.Batch != 32 || c.Mailbox != 5 || c.MaxInFlight != 64 {
				t.Errorf("MaxActors %d, Batch %d, Mailbox %d, MaxInFlight %d; want 1000, 32, 5, 64", c.MaxActors, c.Batch, c.Mailbox, c.MaxInFlight)
			}
		},
	}, {
		name: "explicit bounds that cannot fit: a warning",
		cfg:  worker.Config{MemoryLimit: 256 * mi, MaxActors: 100_000},
		warn: true,
		check: func(t *testing.T, c worker.Config, _ worker.MemoryPlan) {
			if c.MaxActors != 100_000 {
				t.Errorf("MaxActors %d, want the explicit 100,000", c.MaxActors)
			}
		},
	}, {
		name: "a limit too small for the floors: a warning",
		cfg:  worker.Config{MemoryLimit: 16 * mi},
		warn: true,
		check: func(t *testing.T, c worker.Config, _ worker.MemoryPlan) {
			if c.MaxActors < 1 || c.MaxInFlight < c.Batch || c.Batch < 1 || c.Mailbox < 1 {
				t.Errorf("unusable bounds: %+v", c)
			}
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, p := tt.cfg.Sized(tt.workflows)
			if got := len(p.Warnings) > 0; got != tt.warn {
				t.Errorf("warnings %q, want some: %v", p.Warnings, tt.warn)
			}
			if tt.cfg.MemoryLimit > 0 && !tt.warn && p.Estimate > p.Budget {
				t.Errorf("estimate %d MiB over the budget %d MiB without a warning", p.Estimate/mi, p.Budget/mi)
			}
			if tt.cfg.MemoryLimit > 0 && p.Budget >= tt.cfg.MemoryLimit {
				t.Errorf("budget %d of a limit of %d", p.Budget, tt.cfg.MemoryLimit)
			}
			if p.Estimate <= p.Actors+p.Events+p.Actions || p.Actors <= 0 || p.Events <= 0 || p.Actions <= 0 {
				t.Errorf("plan parts: %+v", p)
			}
			tt.check(t, c, p)
		})
	}
	// Sizing never raises a bound as the limit falls.
	prev := worker.Config{MemoryLimit: 8 << 30}.WithDefaults()
	for limit := int64(8 << 30); limit >= 16*mi; limit /= 2 {
		c := worker.Config{MemoryLimit: limit}.WithDefaults()
		if c.MaxActors > prev.MaxActors || c.MaxInFlight > prev.MaxInFlight {
			t.Errorf("at %d MiB: MaxActors %d, MaxInFlight %d; at twice the limit %d, %d", limit/mi, c.MaxActors, c.MaxInFlight, prev.MaxActors, prev.MaxInFlight)
		}
		prev = c
	}
}

// TestMemoryLimitBoundsPendingWork: with a memory limit, the keys held in
// memory while their slow work waits stay within the sized MaxActors, the
// partitions stop pulling meanwhile, and every key's work is done once
// slots free up. On the old code every key with an event got an actor.
func TestMemoryLimitBoundsPendingWork(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := worker.Config{MemoryLimit: 32 << 20, Concurrency: 4, Queue: worker.QueueConfig{Partitions: 2}}
	sized, plan := cfg.Sized(1)
	if sized.MaxActors >= 1000 || len(plan.Warnings) == 0 {
		t.Fatalf("32 MiB sized MaxActors to %d (warnings %q): the test needs a small bound", sized.MaxActors, plan.Warnings)
	}
	keys := 3 * sized.MaxActors

	gate := make(chan struct{})
	var (
		started   sync.Mutex
		nStarted  int
		closeGate = sync.OnceFunc(func() { close(gate) })
	)
	t.Cleanup(closeGate)
	w := startWorker(t, b.url, cfg, func(ctx context.Context, _ worker.ActionCall[tally]) (any, error) {
		started.Lock()
		nStarted++
		started.Unlock()
		select {
		case <-gate:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	// A "work" event leaves work pending: the status of its outcome is the
	// key's one settled status.
	settled := countSettled(t, b.client, "tally", keys)

	// The most actors ever live, sampled until the test is done.
	var (
		peak     int
		peakMu   sync.Mutex
		sampling sync.WaitGroup
		stop     = make(chan struct{})
	)
	sampling.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			n := w.Stats().Actors
			peakMu.Lock()
			peak = max(peak, n)
			peakMu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	stopSampling := sync.OnceFunc(func() { close(stop); sampling.Wait() })
	t.Cleanup(stopSampling)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range keys {
		if _, err := b.client.Publish(ctx, "tally", fmt.Sprintf("m%d", i), contract.Envelope{Event: "work"}); err != nil {
			t.Fatal(err)
		}
	}
	// The bound fills up and holds: the rest of the keys wait in the stream.
	waitFor(t, 30*time.Second, fmt.Sprintf("%d live actors", sized.MaxActors), func() bool {
		return w.Stats().Actors >= sized.MaxActors
	})
	st := w.Stats()
	closeGate()
	settled.wait(t, 60*time.Second)
	stopSampling()

	peakMu.Lock()
	defer peakMu.Unlock()
	// Outcomes come back to actors already live; nothing else adds one.
	if peak > sized.MaxActors {
		t.Errorf("peak live actors %d with the memory limit's MaxActors %d (%d keys with work pending)", peak, sized.MaxActors, keys)
	}
	if st.InFlight > cfg.Queue.Partitions*sized.MaxInFlight {
		t.Errorf("%d events in flight, the bound is %d partitions × %d", st.InFlight, cfg.Queue.Partitions, sized.MaxInFlight)
	}
	started.Lock()
	defer started.Unlock()
	if nStarted < keys {
		t.Errorf("%d actions started for %d keys", nStarted, keys)
	}
	if !strings.Contains(fmt.Sprint(plan.Warnings), "memory limit 32 MiB") {
		t.Errorf("warning %q does not name the limit", plan.Warnings)
	}
}
