package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// rawState measures the broker work Orderly's no-op pipeline asks for, done
// with raw JetStream and nothing else: the raw pipeline, plus, for each
// message, a write of its key's state to a stream that keeps one message per
// subject (a KV bucket's layout), and only once that write is acknowledged,
// the ack of the message and a core publish of a status that a third
// connection receives (done). It is a ceiling for Orderly on this machine:
// the same stores, removals, acks and publishes per event, with no state
// machine, no ordering per key, no compare-and-set and no decoding.
func (b *bench) rawState(ctx context.Context, name string, n int) (result, error) {
	cfg := b.cfg
	up := strings.ToUpper(name)
	stream, kv := "BENCH_RAWSTATE_"+up, "BENCH_RAWSTATE_KV_"+up
	subj, kvSubj, statusSubj := "bench.rawstate."+name+".", "bench.rawstate-kv."+name+".", "bench.rawstate-status."+name
	for _, sc := range []jetstream.StreamConfig{
		{Name: stream, Subjects: []string{subj + "*"}, Storage: jetstream.FileStorage,
			Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew},
		{Name: kv, Subjects: []string{kvSubj + "*"}, Storage: jetstream.FileStorage,
			MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew},
	} {
		if _, err := b.adminJS.CreateStream(ctx, sc); err != nil {
			return result{}, err
		}
		defer func() { _ = b.adminJS.DeleteStream(context.WithoutCancel(ctx), sc.Name) }()
	}
	cons, err := b.adminJS.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1024,
	})
	if err != nil {
		return result{}, err
	}

	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	connect := func(role string) (*nats.Conn, jetstream.JetStream, error) {
		nc, err := nats.Connect(b.url, nats.Name("e2ebench-rawstate-"+role))
		if err != nil {
			return nil, nil, err
		}
		conns = append(conns, nc)
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.window))
		return nc, js, err
	}
	_, pubJS, err := connect("pub")
	if err != nil {
		return result{}, err
	}
	workNC, workJS, err := connect("worker")
	if err != nil {
		return result{}, err
	}
	statusNC, _, err := connect("status")
	if err != nil {
		return result{}, err
	}

	var received atomic.Int64
	var doneNS atomic.Int64
	done := make(chan struct{})
	c := newClock()
	if _, err := statusNC.Subscribe(statusSubj, func(*nats.Msg) {
		if received.Add(1) == int64(n) {
			doneNS.Store(c.now())
			close(done)
		}
	}); err != nil {
		return result{}, err
	}
	if err := statusNC.Flush(); err != nil {
		return result{}, err
	}
	cons, err = workJS.Consumer(ctx, stream, cons.CachedInfo().Name)
	if err != nil {
		return result{}, err
	}

	// The state write is asynchronous; its ack, in order, releases the
	// message's ack and status, so writes are pipelined as Orderly's
	// actors pipeline theirs across keys.
	type held struct {
		m jetstream.Msg
		f jetstream.PubAckFuture
	}
	writes := make(chan held, 1024)
	var wg sync.WaitGroup
	wg.Go(func() {
		for h := range writes {
			select {
			case <-h.f.Ok():
			case <-h.f.Err():
				continue
			case <-ctx.Done():
				continue
			}
			_ = h.m.Ack()
			_ = workNC.Publish(statusSubj, []byte(`{"settled":true}`))
		}
	})
	defer wg.Wait()
	defer close(writes)
	state := make([]byte, 96)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		key := m.Subject()[len(subj):]
		f, err := workJS.PublishMsgAsync(&nats.Msg{Subject: kvSubj + key, Data: state})
		if err != nil {
			return
		}
		writes <- held{m, f}
	}, jetstream.PullMaxMessages(256))
	if err != nil {
		return result{}, err
	}
	defer cc.Stop()

	resetPeakRSS()
	b.srv.resetPeak()
	data := make([]byte, cfg.size)
	cpu0, alloc0 := b.markCPU(), allocated()
	start := c.now()
	err = publishWindow(ctx, n, cfg.window, func(i int) (ackWaiter, error) {
		f, err := pubJS.PublishMsgAsync(&nats.Msg{Subject: subj + "k" + strconv.Itoa(i%cfg.keys), Data: data})
		if err != nil {
			return nil, err
		}
		return rawFuture{f}, nil
	})
	if err != nil {
		return result{}, err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return result{}, fmt.Errorf("%d of %d statuses received: %w", received.Load(), n, ctx.Err())
	}
	r := result{eps: float64(n) / time.Duration(doneNS.Load()-start).Seconds()}
	r.cpu, r.serverCPU = b.cpuPerEvent(cpu0, n)
	r.allocs, r.allocBytes = allocated().per(alloc0, n)
	r.rss, r.serverRSS = peakRSS(), b.srv.peakRSS()
	return r, nil
}
