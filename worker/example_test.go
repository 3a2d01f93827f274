package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// A workflow of lights, run by a worker inside the program: define the
// machine, give its action a function, start the worker, publish an event
// and follow it to its end, stop.
func ExampleNew() {
	// An in-process nats-server, so that the example runs anywhere; a
	// service would connect to its NATS cluster instead.
	dir, err := os.MkdirTemp("", "worker-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// One connection of our own, for the worker and for producing: the
	// worker does not close it.
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	conn, err := queue.New(nc)
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	type Light struct {
		Level int `json:"level"`
	}
	m := statemachine.MustNew(statemachine.Definition[Light]{
		Name:    "light",
		Initial: "off",
		States:  []statemachine.StateDef{{Name: "off"}, {Name: "on"}},
		Events: []statemachine.EventDef{
			{Name: "switch_on", Client: true}, {Name: "switch_off", Client: true},
			{Name: "lit"}, {Name: "broken"},
		},
		Actions: []statemachine.ActionDef{{Name: "power", OnSuccess: "lit", OnFailure: "broken"}},
		Transitions: []statemachine.Transition[Light]{
			{From: "off", On: "switch_on", To: "on", Actions: []string{"power"},
				Update: func(d Light, in statemachine.Input) (Light, error) { return d, json.Unmarshal(in.Data, &d) }},
			{From: "on", On: "lit", To: "on"},
			{From: "on", On: "broken", To: "off"},
			{From: "on", On: "switch_off", To: "off"},
		},
	})
	wf, err := worker.NewWorkflow(m, map[string]worker.ActionFunc[Light]{
		// The slow work, run after switch_on is committed and acknowledged.
		"power": func(_ context.Context, c worker.ActionCall[Light]) (any, error) {
			fmt.Printf("powering %s to level %d\n", c.Key, c.Data.Level)
			return nil, nil
		},
	})
	if err != nil {
		panic(err)
	}

	w, err := worker.New(nc, worker.Config{}, wf)
	if err != nil {
		panic(err)
	}
	if err := w.Start(ctx); err != nil {
		panic(err)
	}
	// A producer on the same connection.
	producer, err := client.New(conn.NATS(), client.Config{})
	if err != nil {
		panic(err)
	}
	defer producer.Close()
	_, st, err := producer.PublishAndWait(ctx, "light", "hall", contract.Envelope{Event: "switch_on", Data: json.RawMessage(`{"level":3}`)})
	if err != nil {
		panic(err)
	}
	fmt.Println(st.Event, st.From, "->", st.To, "settled:", st.Settled)

	if err := w.Stop(ctx); err != nil {
		panic(err)
	}
	select {
	case <-w.Stopped():
		fmt.Println("stopped")
	case <-ctx.Done():
		fmt.Println("not stopped:", ctx.Err())
	}
	// Output:
	// powering hall to level 3
	// lit on -> on settled: true
	// stopped
}
