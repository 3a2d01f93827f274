package worker_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/worker"
)

// BenchmarkManyKeysBoundedActors sends one event to each of 100,000 keys
// through a worker capped at 1,000 actors and reports the peak of live
// actors and of the Go heap (worker and embedded server share the process).
//
//	go test -run '^$' -bench ManyKeys -benchtime 1x ./worker/
func BenchmarkManyKeysBoundedActors(b *testing.B) {
	const keys, maxActors = 100_000, 1000
	for range b.N {
		srv := natstest.Server(b)
		conn := natstest.Conn(b, srv.ClientURL())
		producer := natstest.Client(b, srv.ClientURL())
		ctx := context.Background()
		if _, err := conn.Provision(ctx, queue.Spec{Workflow: "tally"}); err != nil {
			b.Fatal(err)
		}
		wf, err := worker.NewWorkflow(tallyMachine(b), map[string]worker.ActionFunc[tally]{
			"slow": func(context.Context, worker.ActionCall[tally]) (any, error) { return nil, nil },
		})
		if err != nil {
			b.Fatal(err)
		}
		w, err := worker.New(natstest.NATS(b, srv.ClientURL()), worker.Config{MaxActors: maxActors, ActorIdle: time.Second}, wf)
		if err != nil {
			b.Fatal(err)
		}
		var settled atomic.Int64
		sub, err := producer.Subscribe("tally", "", func(s contract.Status) {
			if s.Settled && s.Error == nil {
				settled.Add(1)
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var peakActors int
		var peakHeap uint64
		sample := func() {
			if n := w.Stats().Actors; n > peakActors {
				peakActors = n
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapInuse)
		}
		b.ResetTimer()
		start := time.Now()
		if err := w.Start(ctx); err != nil {
			b.Fatal(err)
		}
		var window []*client.PendingPublish
		for k := range keys {
			p, err := producer.PublishAsync("tally", fmt.Sprintf("key-%d", k), add(k))
			if err != nil {
				b.Fatal(err)
			}
			window = append(window, p)
			if len(window) == 2048 {
				for _, p := range window {
					if _, err := p.Wait(ctx); err != nil {
						b.Fatal(err)
					}
				}
				window = window[:0]
				sample()
			}
		}
		for _, p := range window {
			if _, err := p.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
		for settled.Load() < keys {
			sample()
			time.Sleep(10 * time.Millisecond)
		}
		elapsed := time.Since(start)
		b.StopTimer()
		_ = sub.Unsubscribe()
		if err := w.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		if peakActors > maxActors {
			b.Fatalf("peak %d live actors, cap %d", peakActors, maxActors)
		}
		b.ReportMetric(float64(peakActors), "peak-actors")
		b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MiB")
		b.ReportMetric(float64(keys)/elapsed.Seconds(), "events/s")
	}
}
