package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// Counter is the data of the examples' workflow, "counter": every add event
// adds its n to Total, and a guard refuses a total above 10; close ends it.
type Counter struct {
	Total int `json:"total"`
}

// runCounter starts what the examples talk to: an in-process nats-server and
// a worker running "counter". It returns the server's URL and a function
// that stops everything.
func runCounter() (string, func()) {
	dir, err := os.MkdirTemp("", "client-example-")
	if err != nil {
		panic(err)
	}
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		panic(err)
	}
	type add struct {
		N int `json:"n"`
	}
	m := statemachine.MustNew(statemachine.Definition[Counter]{
		Name: "counter", Initial: "counting",
		States: []statemachine.StateDef{{Name: "counting"}, {Name: "closed", Terminal: true}},
		Events: []statemachine.EventDef{{Name: "add", Client: true}, {Name: "close", Client: true}},
		Transitions: []statemachine.Transition[Counter]{{From: "counting", On: "close", To: "closed"}, {
			From: "counting", On: "add", To: "counting",
			Guard: func(d Counter, in statemachine.Input) error {
				var a add
				if json.Unmarshal(in.Data, &a) != nil || d.Total+a.N > 10 {
					return errors.New("a total above 10")
				}
				return nil
			},
			Update: func(d Counter, in statemachine.Input) (Counter, error) {
				var a add
				err := json.Unmarshal(in.Data, &a)
				d.Total += a.N
				return d, err
			},
		}},
	})
	wf, err := worker.NewWorkflow(m, nil)
	if err != nil {
		panic(err)
	}
	// The worker runs on a connection of its own, which stays ours to close.
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	w, err := worker.New(nc, worker.Config{Queue: worker.QueueConfig{Partitions: 1}}, wf)
	if err != nil {
		panic(err)
	}
	if err := w.Start(context.Background()); err != nil {
		panic(err)
	}
	return srv.ClientURL(), func() {
		_ = w.Stop(context.Background())
		nc.Close()
		srv.Shutdown()
		_ = os.RemoveAll(dir)
	}
}

// counterClient runs the examples' workflow and returns a client of it, on
// a connection of its own, and a function that stops everything.
func counterClient() (*client.Client, func()) {
	url, stop := runCounter()
	c, err := client.Connect(url, client.Config{})
	if err != nil {
		panic(err)
	}
	return c, func() { _ = c.Close(); stop() }
}

func add(n int) contract.Envelope {
	return contract.Envelope{Event: "add", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

// A client on a connection of the service's own: Close leaves the
// connection as it was.
func ExampleNew() {
	url, stop := runCounter()
	defer stop()
	nc, err := nats.Connect(url, nats.Name("my-service"))
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	c, err := client.New(nc, client.Config{})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := c.Publish(ctx, "counter", "c-1", add(2), client.WithJobID("order-42-add"))
	if err != nil {
		panic(err)
	}
	fmt.Println("stored", ack.ID, "at sequence", ack.Sequence)
	_ = c.Close()
	fmt.Println("connection still open:", nc.IsConnected())
	// Output:
	// stored order-42-add at sequence 1
	// connection still open: true
}

// Publish an event and wait for the worker to settle it: the producer's
// "call". The job id is the idempotency key: publishing job-1 again within
// the dedupe window applies nothing.
func ExampleClient_PublishAndWait() {
	c, stop := counterClient()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ack, st, err := c.PublishAndWait(ctx, "counter", "c-1", add(4), client.WithJobID("job-1"))
	if err != nil {
		panic(err)
	}
	fmt.Println(ack.ID, st.Event, st.To, "version", st.Version)

	// A rejected event settles too; its status says why.
	_, st, err = c.PublishAndWait(ctx, "counter", "c-1", add(20))
	if err != nil {
		panic(err)
	}
	fmt.Println(st.Error.Code, "version", st.Version)

	ack, _, err = c.PublishAndWait(ctx, "counter", "c-1", add(4), client.WithJobID("job-1"))
	if err != nil {
		panic(err)
	}
	fmt.Println("duplicate:", ack.Duplicate)
	// Output:
	// job-1 add counting version 1
	// guard_refused version 1
	// duplicate: true
}

// Read a key's durable state: what survives restarts, unlike statuses.
func ExampleClient_State() {
	c, stop := counterClient()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, _, err := c.PublishAndWait(ctx, "counter", "c-1", add(3)); err != nil {
		panic(err)
	}
	rec, err := c.State(ctx, "counter", "c-1")
	if err != nil {
		panic(err)
	}
	fmt.Println(rec.State, rec.Version, string(rec.Data))

	_, err = c.State(ctx, "counter", "c-2")
	fmt.Println(errors.Is(err, client.ErrNoState))
	// Output:
	// counting 1 {"total":3}
	// true
}

// Follow every key of a workflow as it changes. Statuses are pub/sub: a
// subscriber sees what is published while it is subscribed.
func ExampleClient_Subscribe() {
	c, stop := counterClient()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	statuses := make(chan contract.Status, 8)
	sub, err := c.Subscribe("counter", "", func(st contract.Status) { statuses <- st })
	if err != nil {
		panic(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	for _, n := range []int{1, 2, 30} {
		if _, err := c.Publish(ctx, "counter", "c-1", add(n)); err != nil {
			panic(err)
		}
	}
	for range 3 {
		var st contract.Status
		select {
		case st = <-statuses:
		case <-ctx.Done():
			panic("no status within 10s")
		}
		if st.Error != nil {
			fmt.Println(st.Key, st.Event, "rejected:", st.Error.Code)
			continue
		}
		fmt.Println(st.Key, st.Event, "version", st.Version)
	}
	// Output:
	// c-1 add version 1
	// c-1 add version 2
	// c-1 add rejected: guard_refused
}
