package queue_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// BenchmarkStateCompareAndSet measures the worker's state commit, a
// compare-and-set write of one key's record at its revision, three ways in
// one run: Bucket.Put (one request with a hand-parsed publish ack, what the
// actor's commit calls), jetstream's KeyValue.Update (a JetStream publish
// with the expected-revision header, its ack decoded by encoding/json), and
// Bucket.PutAsync (pipelined, 256 outstanding). Each runs on a server of
// its own (a bucket that grew under one must not slow the next), by one
// goroutine (one write after another) and by GOMAXPROCS×16, each with a key
// of its own, as actors commit. Besides ns/op it reports cpu-ns/op, the
// process's CPU time per write (the in-process server's included): steadier
// than the elapsed time on a busy machine.
//
//	go test -run '^$' -bench StateCompareAndSet -benchmem -count 6 ./queue/
func BenchmarkStateCompareAndSet(b *testing.B) {
	ctx := context.Background()
	// A record of the size the no-op pipeline writes.
	value := []byte(`{"state":"processing","version":12,"data":{"order_id":"order-12345","amount":4200,"currency":"EUR"},"updated_at":"2026-12-01T10:00:00.123456789Z","entered":11}`)
	type putFunc func(key string, rev uint64) (uint64, error)
	// open provisions a workflow on a server of its own and returns its
	// state bucket both ways.
	open := func(b *testing.B) (*queue.Bucket, map[string]putFunc) {
		srv := natstest.Server(b)
		conn := natstest.Conn(b, srv.ClientURL())
		if _, err := conn.Provision(ctx, queue.Spec{Workflow: "order", Partitions: 1}); err != nil {
			b.Fatal(err)
		}
		bucket, err := conn.Bucket(ctx, "order")
		if err != nil {
			b.Fatal(err)
		}
		kv, err := rawJSOn(b, srv.ClientURL()).KeyValue(ctx, "orderly_state_order")
		if err != nil {
			b.Fatal(err)
		}
		return bucket, map[string]putFunc{
			"hand-built": func(key string, rev uint64) (uint64, error) { return bucket.Put(ctx, key, value, rev) },
			"kv.Update":  func(key string, rev uint64) (uint64, error) { return kv.Update(ctx, key, value, rev) },
		}
	}
	for _, name := range []string{"hand-built", "kv.Update"} {
		b.Run(name+"/serial", func(b *testing.B) {
			_, puts := open(b)
			put := puts[name]
			var rev uint64
			defer cpuPerOp(b)()
			for b.Loop() {
				var err error
				if rev, err = put("k", rev); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			_, puts := open(b)
			put := puts[name]
			var next atomicCounter
			b.SetParallelism(16)
			b.ResetTimer()
			defer cpuPerOp(b)()
			b.RunParallel(func(pb *testing.PB) {
				key := "k" + strconv.Itoa(next.add())
				var rev uint64
				for pb.Next() {
					var err error
					if rev, err = put(key, rev); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	b.Run("hand-built-async/pipelined", func(b *testing.B) {
		bucket, _ := open(b)
		const window = 256
		type put struct {
			p   *queue.PendingPut
			key int
		}
		revs := make([]uint64, window)
		pending := make(chan put, window)
		wait := func(p put) {
			rev, err := p.p.Wait(ctx)
			if err != nil {
				b.Fatal(err)
			}
			revs[p.key] = rev
		}
		defer cpuPerOp(b)()
		i := 0
		for b.Loop() {
			k := i % window // a key is written again only once its last write is in
			i++
			if len(pending) == window {
				wait(<-pending)
			}
			p, err := bucket.PutAsync("k"+strconv.Itoa(k), value, revs[k])
			if err != nil {
				b.Fatal(err)
			}
			pending <- put{p, k}
		}
		for len(pending) > 0 {
			wait(<-pending)
		}
	})
}

type atomicCounter struct{ n atomic.Int64 }

func (c *atomicCounter) add() int { return int(c.n.Add(1)) }

// cpuPerOp reports the process's CPU time per operation from now until the
// function it returns is called.
func cpuPerOp(b *testing.B) func() {
	start := cpuTime(b)
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
