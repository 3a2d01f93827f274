package client_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// BenchmarkPublishAsyncJobID is what a producer pays for its own job ids:
// PublishAsync with a window of 1024 and made ids (no look-up), against ids
// given with WithJobID (looked up in the job bucket in batches while the events
// are on their way), against the design PublishAsync does not use: each given id
// looked up before its event is sent, one round trip per event.
//
//	go test -run '^$' -bench PublishAsyncJobID ./client/
func BenchmarkPublishAsyncJobID(b *testing.B) {
	const fixed = `{"event":"ping","data":{"p":""}}`
	data := []byte(`{"event":"ping","data":{"p":"` + strings.Repeat("x", 256-len(fixed)) + `"}}`) // as before the move
	for _, c := range []struct {
		name            string
		explicit, first bool
	}{{"made", false, false}, {"given", true, false}, {"given-looked-up-first", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			srv := natstest.Server(b)
			conn := natstest.Conn(b, srv.ClientURL())
			producer := natstest.Client(b, srv.ClientURL())
			ctx := context.Background()
			if _, err := conn.Provision(ctx, queue.Spec{Workflow: "order", Partitions: 1, QueueLimit: 10_000_000}); err != nil {
				b.Fatal(err)
			}
			ev := contract.Envelope{Event: "ping", Data: data}
			window := make(chan *client.PendingPublish, 1024)
			wait := func(p *client.PendingPublish) {
				if _, err := p.Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			i := 0
			for b.Loop() {
				var opts []client.PublishOption
				if c.explicit {
					id := "job-" + strconv.Itoa(i)
					opts = append(opts, client.WithJobID(id))
					if c.first {
						if _, err := producer.Job(ctx, "order", id); !errors.Is(err, client.ErrNoJob) {
							b.Fatal(err)
						}
					}
				}
				i++
				if len(window) == cap(window) {
					wait(<-window)
				}
				p, err := producer.PublishAsync("order", "k"+strconv.Itoa(i%1000), ev, opts...)
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
