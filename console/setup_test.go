package console_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/console"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// notes is the test workflow: a key keeps the last note it was sent, so
// that whatever a producer puts in an event's data is shown on its page.
// A note that starts with "refuse" is refused by the guard, whose reason
// repeats it: a status error message that a producer chose.
type notes struct {
	Note string `json:"note"`
}

func notesMachine(t testing.TB) *statemachine.Machine[notes] {
	t.Helper()
	m, err := statemachine.New(statemachine.Definition[notes]{
		Name:    "notes",
		Initial: "open",
		States:  []statemachine.StateDef{{Name: "open"}, {Name: "closed", Terminal: true}},
		Events:  []statemachine.EventDef{{Name: "note", Client: true}, {Name: "close", Client: true}},
		Transitions: []statemachine.Transition[notes]{
			{From: "open", On: "note", To: "open",
				Guard: func(_ notes, in statemachine.Input) error {
					var n notes
					_ = json.Unmarshal(in.Data, &n)
					if strings.HasPrefix(n.Note, "refuse") {
						return errors.New("refused: " + n.Note)
					}
					return nil
				},
				Update: func(_ notes, in statemachine.Input) (notes, error) {
					var n notes
					err := json.Unmarshal(in.Data, &n)
					return n, err
				}},
			{From: "open", On: "close", To: "closed"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// bundle is a worker running the order and notes workflows on a real
// embedded server, with consoles over it.
type bundle struct {
	url      string // NATS
	nc       *nats.Conn
	js       jetstream.JetStream
	producer *client.Client // a producer on a connection of its own
	worker   *worker.Worker
	flows    []console.Workflow
}

func setup(t *testing.T) *bundle {
	t.Helper()
	srv := natstest.Server(t)
	b := &bundle{url: srv.ClientURL()}
	b.nc = natstest.NATS(t, b.url)
	ow, err := order.NewWorkflow(order.Config{}, order.NewSimGateway(order.SimConfig{Latency: 10 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	nm := notesMachine(t)
	nw, err := worker.NewWorkflow(nm, nil)
	if err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	w, err := worker.New(b.nc, worker.Config{
		Queue:  worker.QueueConfig{Partitions: 4, MaxDeliver: 2, AckWait: 2 * time.Second},
		Logger: &log,
	}, ow, nw)
	if err != nil {
		t.Fatal(err)
	}
	// Start's context bounds the worker's whole life.
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = w.Stop(sctx)
	})
	b.worker = w
	b.flows = []console.Workflow{console.WorkflowOf(order.New(order.Config{})), console.WorkflowOf(nm)}
	b.producer = natstest.Client(t, b.url)
	b.js, err = jetstream.New(natstest.NATS(t, b.url))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serve runs a console over the bundle's worker, on its own HTTP server on
// 127.0.0.1, and returns its URL. The console closes (ending its live
// views) before the server does.
func (b *bundle) serve(t *testing.T, cfg console.Config) (string, *console.Console) {
	t.Helper()
	cl, err := client.New(b.nc, client.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Client, cfg.Runtime, cfg.Workflows = cl, b.worker, b.flows
	if cfg.Refresh == 0 {
		cfg.Refresh = 200 * time.Millisecond
	}
	c, err := console.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(c)
	t.Cleanup(ts.Close)
	t.Cleanup(c.Close)
	t.Cleanup(func() { _ = cl.Close() })
	return ts.URL, c
}

// settle publishes ev to key and waits until the job has settled.
func (b *bundle) settle(t *testing.T, workflow, key, event, data string) contract.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ev := contract.Envelope{Event: event}
	if data != "" {
		ev.Data = json.RawMessage(data)
	}
	_, st, err := b.producer.PublishAndWait(ctx, workflow, key, ev)
	if err != nil {
		t.Fatalf("%s %s %s: %v", workflow, key, event, err)
	}
	return st
}

// deadLetter publishes body raw to subject and waits until the worker has
// dead-lettered it; it returns the dead letter.
func (b *bundle) deadLetter(t *testing.T, workflow, subject string, body []byte) client.DeadLetter {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, err := b.producer.DeadLetters(ctx, workflow, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.Publish(ctx, subject, body); err != nil {
		t.Fatalf("publish to %s: %v", subject, err)
	}
	for {
		all, err := b.producer.DeadLetters(ctx, workflow, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) > len(before) {
			return all[len(all)-1]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s was not dead-lettered within 30s", subject)
		case <-time.After(50 * time.Millisecond): // polling the stream: no event to wait on
		}
	}
}

// get fetches url and returns its status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// noRedirect is an HTTP client that shows redirects instead of following
// them.
var noRedirect = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// post submits a write form and returns the status, the Location and the
// body.
func post(t *testing.T, target string, form url.Values, header http.Header) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, target, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(body)
}
