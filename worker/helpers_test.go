package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// tally is the data of the test workflow: the payloads of its "add" events
// in the order they were applied.
type tally struct {
	Seen []int `json:"seen"`
}

type addEvent struct {
	N int `json:"n"`
}

// tallyMachine: open --add--> open (records n), open --close--> closed,
// open --work--> open [action slow: ok→worked, fail→work_failed],
// open --wait--> waiting, waiting --back--> open, and after 1s in waiting
// --expired--> closed.
func tallyMachine(t testing.TB) *statemachine.Machine[tally] {
	m, err := statemachine.New(statemachine.Definition[tally]{
		Name:    "tally",
		Initial: "open",
		States: []statemachine.StateDef{
			{Name: "open"}, {Name: "closed", Terminal: true},
			{Name: "waiting", Timeout: &statemachine.Timeout{After: time.Second, Event: "expired"}},
		},
		Events: []statemachine.EventDef{
			{Name: "add", Client: true}, {Name: "close", Client: true}, {Name: "work", Client: true},
			{Name: "worked"}, {Name: "work_failed"},
			{Name: "wait", Client: true}, {Name: "back", Client: true}, {Name: "expired"},
		},
		Actions: []statemachine.ActionDef{{Name: "slow", OnSuccess: "worked", OnFailure: "work_failed"}},
		Transitions: []statemachine.Transition[tally]{
			{From: "open", On: "add", To: "open", Update: func(d tally, in statemachine.Input) (tally, error) {
				var ev addEvent
				if err := json.Unmarshal(in.Data, &ev); err != nil {
					return d, err
				}
				d.Seen = append(slices.Clip(d.Seen), ev.N)
				return d, nil
			}},
			{From: "open", On: "close", To: "closed"},
			{From: "open", On: "work", To: "open", Actions: []string{"slow"}},
			{From: "open", On: "worked", To: "open"},
			{From: "open", On: "work_failed", To: "closed"},
			{From: "open", On: "wait", To: "waiting"},
			{From: "waiting", On: "back", To: "open"},
			{From: "waiting", On: "expired", To: "closed"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type bundle struct {
	url    string
	conn   *queue.Conn
	client *client.Client // a producer, on a connection of its own
}

func setup(t *testing.T) bundle {
	t.Helper()
	srv := natstest.Server(t)
	return bundle{url: srv.ClientURL(), conn: natstest.Conn(t, srv.ClientURL()), client: natstest.Client(t, srv.ClientURL())}
}

// startWorker runs a worker on its own connection and stops it when the
// test ends.
func startWorker(t *testing.T, url string, cfg worker.Config, slow worker.ActionFunc[tally]) *worker.Worker {
	t.Helper()
	return startWorkerOf(t, url, cfg, tallyWorkflow(t, slow))
}

// startWorkerOf is startWorker for any workflow.
func startWorkerOf(t *testing.T, url string, cfg worker.Config, wf worker.Workflow) *worker.Worker {
	t.Helper()
	nc := natstest.NATS(t, url)
	if os.Getenv("ORDERLY_TEST_LOG") != "" {
		l := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05.000"}).Level(zerolog.DebugLevel).With().Timestamp().Logger()
		cfg.Logger = &l
	}
	w, err := worker.New(nc, cfg, wf)
	if err != nil {
		t.Fatal(err)
	}
	// Start's context bounds the worker's whole life, not just start-up.
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return w
}

func add(n int) contract.Envelope {
	return contract.Envelope{Event: "add", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

// settledCounter counts settled statuses per key until want are in.
type settledCounter struct {
	mu     sync.Mutex
	byKey  map[string]int
	total  int
	want   int
	done   chan struct{}
	closed bool
}

func countSettled(t *testing.T, cl *client.Client, workflow string, want int) *settledCounter {
	t.Helper()
	c := &settledCounter{byKey: map[string]int{}, want: want, done: make(chan struct{})}
	sub, err := cl.Subscribe(workflow, "", func(s contract.Status) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if s.Error == nil && s.Settled {
			c.byKey[s.Key]++
			c.total++
		}
		if c.total >= c.want && !c.closed {
			c.closed = true
			close(c.done)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

func (c *settledCounter) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(d):
		c.mu.Lock()
		defer c.mu.Unlock()
		t.Fatalf("only %d of %d settled statuses within %s", c.total, c.want, d)
	}
}

func readTally(t *testing.T, cl *client.Client, key string) (contract.StateRecord, tally) {
	t.Helper()
	rec, err := cl.State(context.Background(), "tally", key)
	if err != nil {
		t.Fatalf("state of %s: %v", key, err)
	}
	var d tally
	if err := json.Unmarshal(rec.Data, &d); err != nil {
		t.Fatal(err)
	}
	return rec, d
}

// waitFor polls cond, for conditions no event announces (a stream's count).
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// subscribeKey collects the statuses of key until the test ends.
func subscribeKey(t *testing.T, cl *client.Client, key string) <-chan contract.Status {
	t.Helper()
	statuses := make(chan contract.Status, 64)
	sub, err := cl.Subscribe("tally", key, func(s contract.Status) { statuses <- s })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return statuses
}

func tallyWorkflow(t testing.TB, slow worker.ActionFunc[tally]) worker.Workflow {
	t.Helper()
	if slow == nil {
		slow = func(context.Context, worker.ActionCall[tally]) (any, error) { return nil, nil }
	}
	wf, err := worker.NewWorkflow(tallyMachine(t), map[string]worker.ActionFunc[tally]{"slow": slow})
	if err != nil {
		t.Fatal(err)
	}
	return wf
}

func natstestConn(t *testing.T, url string) *queue.Conn { return natstest.Conn(t, url) }

func itoa(n int) string { return fmt.Sprint(n) }
