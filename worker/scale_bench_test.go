package worker_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/worker"
)

// BenchmarkScaleOut (issue 20, item 5) is the scaling figure: events/s
// through one, two and three workers over the same 16 partitions, on a
// 3-node cluster in this process (streams and buckets R3) and on a single
// node (R1), each beside raw JetStream on the same servers in the same run
// (publish, pull, ack: no state, no claim, no status). Besides events/s it
// reports the CPU the whole process used per event (servers, workers and
// producer share it) and how busy the machine's cores were: when they are
// saturated, the machine is the limit, whatever the number of workers.
//
//	go test -run '^$' -bench ScaleOut -benchtime 1x -count 3 ./worker/
func BenchmarkScaleOut(b *testing.B) {
	for _, nodes := range []int{3, 1} {
		b.Run(fmt.Sprintf("nodes=%d/raw", nodes), func(b *testing.B) {
			for range b.N {
				benchRaw(b, scaleServers(b, nodes), nodes)
			}
		})
		for _, workers := range []int{1, 2, 3} {
			b.Run(fmt.Sprintf("nodes=%d/workers=%d", nodes, workers), func(b *testing.B) {
				for range b.N {
					benchWorkers(b, scaleServers(b, nodes), nodes, workers)
				}
			})
		}
	}
}

// Each run: scaleEvents events, scaleRounds to each of scaleKeys keys, in
// order per key, published with a window of 2,048.
const (
	scaleKeys   = 4000
	scaleRounds = 5
	scaleEvents = scaleKeys * scaleRounds
	scaleWindow = 2048
)

// scaleServers starts a cluster of n nodes, or a single server for 1, and
// returns its client URL.
func scaleServers(b *testing.B, n int) string {
	if n == 1 {
		return natstest.Server(b).ClientURL()
	}
	return natstest.StartCluster(b, n).URL()
}

// usage measures the wall time and the process's CPU time of a run.
type usage struct {
	wall time.Time
	cpu  time.Duration
}

func startUsage() usage { return usage{time.Now(), cpuTime()} }

// report reports events/s, the CPU per event and the cores' busy share.
func (u usage) report(b *testing.B, events int) {
	wall, cpu := time.Since(u.wall), cpuTime()-u.cpu
	b.ReportMetric(float64(events)/wall.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(events), "cpu-µs/event")
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds()/float64(runtime.NumCPU()), "%cores")
	// The machine's load at the end: above the number of cores, other
	// processes competed for them.
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		var load float64
		if _, err := fmt.Sscanf(string(la), "%f", &load); err == nil {
			b.ReportMetric(load, "loadavg")
		}
	}
}

// benchRaw publishes scaleEvents messages into a work-queue stream with the
// replicas of the cluster and consumes them with one pull consumer that
// acks each: the broker's own ceiling for the pipeline on this machine.
func benchRaw(b *testing.B, url string, replicas int) {
	ctx := context.Background()
	pub, sub := natstest.NATS(b, url), natstest.NATS(b, url)
	js, err := jetstream.New(pub, jetstream.WithPublishAsyncMaxPending(scaleWindow))
	if err != nil {
		b.Fatal(err)
	}
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "RAW", Subjects: []string{"raw.>"}, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		b.Fatal(err)
	}
	cjs, err := jetstream.New(sub)
	if err != nil {
		b.Fatal(err)
	}
	cons, err := cjs.CreateOrUpdateConsumer(ctx, "RAW", jetstream.ConsumerConfig{
		Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1024,
	})
	if err != nil {
		b.Fatal(err)
	}
	var acked atomic.Int64
	done := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if acked.Add(1) == scaleEvents {
			close(done)
		}
	}, jetstream.PullMaxMessages(256))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	body := []byte(strings.Repeat("x", 64))
	b.ResetTimer()
	u := startUsage()
	for i := range scaleEvents {
		// Past the window, wait for room as long as it takes (the
		// default, 200ms, fails on a loaded machine).
		if _, err := js.PublishAsync(fmt.Sprintf("raw.key-%d", i%scaleKeys), body, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("publishes not acknowledged within 2m")
	}
	natstest.Recv(b, done, 2*time.Minute, "every raw message consumed")
	b.StopTimer()
	u.report(b, scaleEvents)
}

// benchWorkers runs workers workers of the tally workflow on url, waits
// until they share the partitions, and sends scaleEvents add events
// through them; done = every event's settled status has arrived.
func benchWorkers(b *testing.B, url string, replicas, workers int) {
	ctx := context.Background()
	var ws []*worker.Worker
	for i := range workers {
		wf, err := worker.NewWorkflow(tallyMachine(b), map[string]worker.ActionFunc[tally]{
			"slow": func(context.Context, worker.ActionCall[tally]) (any, error) { return nil, nil },
		})
		if err != nil {
			b.Fatal(err)
		}
		w, err := worker.New(natstest.NATS(b, url), worker.Config{
			ID: fmt.Sprintf("w%d", i+1), Queue: worker.QueueConfig{Replicas: replicas},
		}, wf)
		if err != nil {
			b.Fatal(err)
		}
		if err := w.Start(ctx); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = w.Stop(sctx)
		})
		ws = append(ws, w)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		n, least := 0, 16
		for _, w := range ws {
			k := len(w.Partitions()["tally"])
			n, least = n+k, min(least, k)
		}
		if n == 16 && least >= 16/workers {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the %d workers do not share the 16 partitions within 1m", workers)
		}
		time.Sleep(50 * time.Millisecond) // a rebalance has no event to wait on from here
	}
	producer := natstest.Client(b, url)
	var settled atomic.Int64
	done := make(chan struct{})
	subn, err := producer.Subscribe("tally", "", func(s contract.Status) {
		if s.Settled && s.Error == nil && settled.Add(1) == scaleEvents {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = subn.Unsubscribe() }()
	b.ResetTimer()
	u := startUsage()
	var window []*client.PendingPublish
	for r := range scaleRounds {
		for k := range scaleKeys {
			p, err := producer.PublishAsync("tally", fmt.Sprintf("key-%d", k), add(r))
			if err != nil {
				b.Fatal(err)
			}
			if window = append(window, p); len(window) == scaleWindow {
				for _, p := range window {
					if _, err := p.Wait(ctx); err != nil {
						b.Fatal(err)
					}
				}
				window = window[:0]
			}
		}
	}
	for _, p := range window {
		if _, err := p.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		var stuck []string
		for _, w := range ws {
			stuck = append(stuck, fmt.Sprintf("%+v", w.Stats()))
		}
		b.Fatalf("%d of %d events settled after 10m; workers: %v", settled.Load(), scaleEvents, stuck)
	}
	b.StopTimer()
	u.report(b, scaleEvents)
}
