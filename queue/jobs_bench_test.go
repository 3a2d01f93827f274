package queue_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/queue"
)

// BenchmarkPublishAsyncJobID is what a producer pays for its own job ids:
// PublishAsync with a window of 1024 and made ids (no look-up), against ids
// given with WithID (each looked up in the job bucket while the event is on
// its way), against the design PublishAsync does not use: each given id
// looked up before its event is sent, one round trip per event.
//
//	go test -run '^$' -bench PublishAsyncJobID ./queue/
func BenchmarkPublishAsyncJobID(b *testing.B) {
	for _, c := range []struct {
		name            string
		explicit, first bool
	}{{"made", false, false}, {"given", true, false}, {"given-looked-up-first", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			srv := natstest.Server(b)
			conn := natstest.Conn(b, srv.ClientURL())
			ctx := context.Background()
			if _, err := conn.Provision(ctx, queue.Spec{Workflow: "order", Partitions: 1, QueueLimit: 10_000_000}); err != nil {
				b.Fatal(err)
			}
			ev := contract.Envelope{Event: "ping", Data: envelopeBody}
			window := make(chan *queue.PendingPublish, 1024)
			wait := func(p *queue.PendingPublish) {
				if _, err := p.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			i := 0
			for b.Loop() {
				var opts []queue.PublishOption
				if c.explicit {
					id := "job-" + strconv.Itoa(i)
					opts = append(opts, queue.WithID(id))
					if c.first {
						if _, err := conn.Job(ctx, "order", id); !errors.Is(err, queue.ErrNoJob) {
							b.Fatal(err)
						}
					}
				}
				i++
				if len(window) == cap(window) {
					wait(<-window)
				}
				p, err := conn.PublishAsync("order", "k"+strconv.Itoa(i%1000), ev, opts...)
				if err != nil {
					b.Fatal(err)
				}
				window <- p
			}
			close(window)
			for p := range window {
				wait(p)
			}
		})
	}
}
