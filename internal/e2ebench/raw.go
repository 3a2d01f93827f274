package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type bench struct {
	cfg     config
	url     string
	srv     *natsServer
	admin   *nats.Conn
	adminJS jetstream.JetStream
}

func (b *bench) connectAdmin() error {
	nc, err := nats.Connect(b.url, nats.Name("e2ebench-admin"))
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	b.admin, b.adminJS = nc, js
	return nil
}

// deleteStreams deletes every stream whose name ends in _<suffix> (either
// case), so that each run starts on empty streams and the server's memory
// does not carry one run into the next.
func (b *bench) deleteStreams(ctx context.Context, suffix string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	names := b.adminJS.StreamNames(ctx)
	var del []string
	for n := range names.Name() {
		if strings.HasSuffix(n, "_"+suffix) || strings.HasSuffix(n, "_"+strings.ToUpper(suffix)) {
			del = append(del, n)
		}
	}
	if err := names.Err(); err != nil {
		return err
	}
	for _, n := range del {
		if err := b.adminJS.DeleteStream(ctx, n); err != nil {
			return fmt.Errorf("delete stream %s: %w", n, err)
		}
	}
	return nil
}

type rawFuture struct{ f jetstream.PubAckFuture }

func (r rawFuture) wait(ctx context.Context) error {
	select {
	case <-r.f.Ok():
		return nil
	case err := <-r.f.Err():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// raw measures the raw JetStream pipeline: one file-storage work-queue
// stream, PublishAsync with a window of cfg.window on one connection, one
// durable pull consumer on another connection taking 256 messages per pull
// (Consume, which asks for the next batch before the last is used up) and
// acking each message. rate 0: as fast as it goes, events/s from the first
// publish to the last message consumed. rate > 0: paced, with publish→ack
// and publish→consumed latencies.
func (b *bench) raw(ctx context.Context, name string, n, rate int) (result, error) {
	cfg := b.cfg
	stream := "BENCH_RAW_" + strings.ToUpper(name)
	subj := "bench.raw." + name + "."
	if _, err := b.adminJS.CreateStream(ctx, jetstream.StreamConfig{
		Name:      stream,
		Subjects:  []string{subj + "*"},
		Storage:   jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy,
		Discard:   jetstream.DiscardNew,
	}); err != nil {
		return result{}, err
	}
	defer func() { _ = b.adminJS.DeleteStream(context.WithoutCancel(ctx), stream) }()
	cons, err := b.adminJS.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       "raw",
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: 1024, // what Orderly gives each partition's consumer
	})
	if err != nil {
		return result{}, err
	}

	pubNC, err := nats.Connect(b.url, nats.Name("e2ebench-raw-pub"))
	if err != nil {
		return result{}, err
	}
	defer pubNC.Close()
	pubJS, err := jetstream.New(pubNC, jetstream.WithPublishAsyncMaxPending(cfg.window))
	if err != nil {
		return result{}, err
	}
	subNC, err := nats.Connect(b.url, nats.Name("e2ebench-raw-sub"))
	if err != nil {
		return result{}, err
	}
	defer subNC.Close()
	subJS, err := jetstream.New(subNC)
	if err != nil {
		return result{}, err
	}
	cons, err = subJS.Consumer(ctx, stream, cons.CachedInfo().Name)
	if err != nil {
		return result{}, err
	}

	c := newClock()
	var sendAt, ackAt, doneAt []int64
	if rate > 0 {
		sendAt, ackAt, doneAt = make([]int64, n), make([]int64, n), make([]int64, n)
	}
	var consumed atomic.Int64
	var doneNS atomic.Int64
	done := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if err := m.Ack(); err != nil {
			return
		}
		if doneAt != nil {
			if i := binary.BigEndian.Uint64(m.Data()); i < uint64(n) {
				doneAt[i] = c.now()
			}
		}
		if consumed.Add(1) == int64(n) {
			doneNS.Store(c.now())
			close(done)
		}
	}, jetstream.PullMaxMessages(256))
	if err != nil {
		return result{}, err
	}
	defer cc.Stop()

	resetPeakRSS()
	b.srv.resetPeak()
	shared := make([]byte, cfg.size)
	pub := func(i int) (ackWaiter, error) {
		data := shared
		if rate > 0 {
			data = make([]byte, cfg.size)
			binary.BigEndian.PutUint64(data, uint64(i))
		}
		f, err := pubJS.PublishMsgAsync(&nats.Msg{Subject: subj + "k" + strconv.Itoa(i%cfg.keys), Data: data})
		if err != nil {
			return nil, err
		}
		return rawFuture{f}, nil
	}
	var r result
	cpu0, alloc0 := b.markCPU(), allocated()
	start := c.now()
	switch {
	case rate > 0 && cfg.producer == "process":
		r.rate, err = b.produceInProcess(ctx, c, produceSpec{
			Raw: true, N: n, Rate: rate, Window: cfg.window, Size: cfg.size, Subject: subj, Keys: cfg.keys,
		}, sendAt, ackAt)
	case rate > 0:
		r.rate, err = publishPaced(ctx, c, n, rate, sendAt, ackAt, pub)
	default:
		err = publishWindow(ctx, n, cfg.window, pub)
	}
	if err != nil {
		return result{}, err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return result{}, fmt.Errorf("%d of %d messages consumed: %w", consumed.Load(), n, ctx.Err())
	}
	r.eps = float64(n) / time.Duration(doneNS.Load()-start).Seconds()
	r.cpu, r.serverCPU = b.cpuPerEvent(cpu0, n)
	r.allocs, r.allocBytes = allocated().per(alloc0, n)
	r.rss, r.serverRSS = peakRSS(), b.srv.peakRSS()
	if rate > 0 {
		r.ackP50, r.ackP99 = latencies(sendAt, ackAt)
		r.doneP50, r.doneP99 = latencies(sendAt, doneAt)
	}
	return r, nil
}
