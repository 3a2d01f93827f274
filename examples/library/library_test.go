// Package library_test holds the code of docs/library.md, run: every Go
// block of that page stands here or in examples/review, whose workflow the
// page shows, and TestLibraryDocCodeIsHere fails when one does not.
package library_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/examples/review"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/worker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

// Sending events from a service, with its own connection, to a worker
// running the order workflow.
func Example_sendEvents() {
	url, stop := startServer()
	defer stop()
	w := startOrderWorker(url)
	defer w.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := send(ctx, url); err != nil {
		panic(err)
	}
	// Output:
	// checkout-42-start awaiting_payment
	// awaiting_payment 4
}

func send(ctx context.Context, url string) error {
	// Your service's connection, with its own options and credentials.
	nc, err := nats.Connect(url, nats.Name("checkout"))
	if err != nil {
		return err
	}
	defer nc.Close()

	c, err := client.New(nc, client.Config{}) // c.Close leaves nc open
	if err != nil {
		return err
	}
	defer c.Close()

	// Stored once JetStream acknowledges; the job id is the idempotency key.
	ack, err := c.Publish(ctx, "order", "order-42",
		contract.Envelope{Event: "start_processing"}, client.WithJobID("checkout-42-start"))
	if err != nil {
		return err
	}
	// Or publish and follow the job until it settles.
	_, st, err := c.PublishAndWait(ctx, "order", "order-42",
		contract.Envelope{Event: "request_payment"})
	if err != nil {
		return err
	}
	fmt.Println(ack.ID, st.To)

	rec, err := c.State(ctx, "order", "order-42")
	if err != nil {
		return err
	}
	fmt.Println(rec.State, rec.Version)
	return nil
}

// Running the review workflow, and a client sending it an event.
func Example_runWorkflow() {
	url, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, url); err != nil {
		panic(err)
	}
	// Output:
	// notify ann: "Q3 report"
	// in_review
}

func run(ctx context.Context, url string) error {
	wf, err := review.NewWorkflow(review.Config{}, printNotifier)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close() // after the worker's Stop
	w, err := worker.New(nc, worker.Config{}, wf)
	if err != nil {
		return err
	}
	if err := w.Start(ctx); err != nil { // provisions, then pulls; returns once ready
		return err
	}
	defer w.Stop(context.WithoutCancel(ctx)) // gently: running actions may finish

	c, err := client.Connect(url, client.Config{})
	if err != nil {
		return err
	}
	defer c.Close()
	_, st, err := c.PublishAndWait(ctx, review.Workflow, "doc-1", contract.Envelope{Event: "submit",
		Data: json.RawMessage(`{"title":"Q3 report","reviewers":["ann"]}`)})
	if err != nil {
		return err
	}
	fmt.Println(st.To)
	return nil
}

var printNotifier = review.NotifierFunc(func(_ context.Context, n review.Notification) error {
	fmt.Printf("notify %s: %q\n", strings.Join(n.Reviewers, ", "), n.Title)
	return nil
})

// startServer starts an in-process nats-server with JetStream, its store in
// a temporary directory.
func startServer() (url string, stop func()) {
	dir, err := os.MkdirTemp("", "library-example-")
	if err != nil {
		panic(err)
	}
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		panic(err)
	}
	return srv.ClientURL(), func() { srv.Shutdown(); _ = os.RemoveAll(dir) }
}

// startOrderWorker runs the reference order workflow with a fast, always
// successful simulated gateway.
func startOrderWorker(url string) *worker.Worker {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := queue.Dial(ctx, queue.Config{URLs: []string{url}})
	if err != nil {
		panic(err)
	}
	wf, err := order.NewWorkflow(order.Config{}, order.NewSimGateway(order.SimConfig{Latency: time.Millisecond}))
	if err != nil {
		panic(err)
	}
	w, err := worker.New(nc, worker.Config{}, wf)
	if err != nil {
		panic(err)
	}
	// Start's context bounds the worker's life, not only its start-up.
	if err := w.Start(context.Background()); err != nil {
		panic(err)
	}
	go func() { <-w.Stopped(); nc.Close() }()
	return w
}

// TestLibraryDocCodeIsHere: every Go block of docs/library.md stands in
// this file or in examples/review, line for line (indentation aside), so
// the page's code compiles and runs.
func TestLibraryDocCodeIsHere(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/library.md")
	if err != nil {
		t.Fatal(err)
	}
	var here []string
	for _, name := range []string{"library_test.go", "../review/review.go", "../review/review_test.go"} {
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		here = append(here, "\n"+strings.Join(trimmed(string(src)), "\n")+"\n")
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) == 0 {
		t.Fatal("docs/library.md has no Go block")
	}
	for _, b := range blocks {
		want := "\n" + strings.Join(trimmed(b[1]), "\n") + "\n"
		if !slices.ContainsFunc(here, func(src string) bool { return strings.Contains(src, want) }) {
			t.Errorf("this Go block of docs/library.md is not in examples/library or examples/review:\n%s", b[1])
		}
	}
}

// trimmed returns the lines of s without their indentation.
func trimmed(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, strings.TrimSpace(sc.Text()))
	}
	return out
}
