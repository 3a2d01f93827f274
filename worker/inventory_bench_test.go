//go:build unix

package worker_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/worker"
)

// BenchmarkInventoryCost measures what the inventory costs per event: runs
// with it and without it (DisableInventory) alternate, five of each, so
// that both see the same machine, and the medians are reported. A run is
// 20,000 events over 2,000 keys of the tally workflow, published with a
// window of 2,000, each moving its key to another state (wait: open ->
// waiting, back: waiting -> open), the path where the inventory writes the
// most (a new entry and the purge of the old one per event); and, as a
// control, self-loops (add), where it writes nothing after a key's first
// event. The worker and the server share the process: cpu-µs/event is the
// process's CPU time (user and system) per event, the figure to compare on
// a loaded machine.
//
//	go test -run '^$' -bench InventoryCost -benchtime 1x ./worker/
func BenchmarkInventoryCost(b *testing.B) {
	const events, keys, rounds = 20_000, 2_000, 5
	for _, path := range []string{"change", "selfloop"} {
		b.Run(path, func(b *testing.B) {
			for range b.N {
				var on, off []costRun
				for range rounds {
					on = append(on, inventoryCostRun(b, events, keys, path == "change", false))
					off = append(off, inventoryCostRun(b, events, keys, path == "change", true))
				}
				mOn, mOff := medianRun(on), medianRun(off)
				b.ReportMetric(mOn.cpu, "cpu-µs/event-on")
				b.ReportMetric(mOff.cpu, "cpu-µs/event-off")
				b.ReportMetric(mOn.rate, "events/s-on")
				b.ReportMetric(mOff.rate, "events/s-off")
				b.ReportMetric(100*(mOn.cpu-mOff.cpu)/mOff.cpu, "%cpu-added")
				b.Logf("%s: on %v, off %v", path, on, off)
			}
		})
	}
}

// costRun is one run's figures: CPU per event and events per second.
type costRun struct{ cpu, rate float64 }

// medianRun returns the run of median CPU per event, and its rate the
// median rate.
func medianRun(rs []costRun) costRun {
	cpus, rates := make([]float64, len(rs)), make([]float64, len(rs))
	for i, r := range rs {
		cpus[i], rates[i] = r.cpu, r.rate
	}
	slices.Sort(cpus)
	slices.Sort(rates)
	return costRun{cpus[len(cpus)/2], rates[len(rates)/2]}
}

func inventoryCostRun(b *testing.B, events, keys int, change, off bool) costRun {
	b.StopTimer()
	defer b.StartTimer()
	// Everything of the run ends with it, so that no idle server or
	// reconnecting client of an earlier run costs CPU in a later one.
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	producer, err := client.Connect(srv.ClientURL(), client.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = producer.Close() }()
	ctx := context.Background()
	nc, err := queue.Dial(ctx, queue.Config{URLs: []string{srv.ClientURL()}})
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	w, err := worker.New(nc, worker.Config{DisableInventory: off}, tallyWorkflow(b, nil))
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := w.Stop(sctx); err != nil {
			b.Error(err)
		}
	}()
	var settled atomic.Int64
	done := make(chan struct{})
	sub, err := producer.Subscribe("tally", "", func(s contract.Status) {
		if s.Settled && s.Error == nil && settled.Add(1) == int64(events) {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	cpu0 := cpuTime()
	start := time.Now()
	var window []*client.PendingPublish
	for i := range events {
		ev := add(i)
		if change {
			ev = contract.Envelope{Event: "wait"}
			if (i/keys)%2 == 1 {
				ev = contract.Envelope{Event: "back"}
			}
		}
		p, err := producer.PublishAsync("tally", fmt.Sprintf("key-%d", i%keys), ev)
		if err != nil {
			b.Fatal(err)
		}
		window = append(window, p)
		if len(window) == keys {
			// A round over every key at a time: each key's events apply
			// in order, one state change each.
			for _, p := range window {
				if _, err := p.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			window = window[:0]
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("%d of %d events settled within 5 minutes", settled.Load(), events)
	}
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	return costRun{cpu: float64(cpu.Microseconds()) / float64(events), rate: float64(events) / elapsed.Seconds()}
}

// cpuTime is the process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
