package review_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/examples/review"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// The review workflow embedded in a program: an in-process nats-server, a
// worker running the workflow, a producer (package client) submitting and
// approving a document, and a gentle stop.
func Example() {
	dir, err := os.MkdirTemp("", "review-example-")
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
	// One NATS connection of our own, for the worker and the producer:
	// neither closes it.
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	// The slow work: in a real service, mail or chat messages.
	notifier := review.NotifierFunc(func(_ context.Context, n review.Notification) error {
		fmt.Printf("notify %s: %q by %s\n", strings.Join(n.Reviewers, ", "), n.Title, n.Author)
		return nil
	})
	wf, err := review.NewWorkflow(review.Config{}, notifier)
	if err != nil {
		panic(err)
	}
	w, err := worker.New(nc, worker.Config{Queue: worker.QueueConfig{Partitions: 1}}, wf)
	if err != nil {
		panic(err)
	}
	if err := w.Start(ctx); err != nil {
		panic(err)
	}

	producer, err := client.New(nc, client.Config{})
	if err != nil {
		panic(err)
	}
	defer producer.Close()
	send := func(event statemachine.Event, data any) contract.Status {
		b, _ := json.Marshal(data)
		_, st, err := producer.PublishAndWait(ctx, review.Workflow, "doc-1", contract.Envelope{Event: string(event), Data: b})
		if err != nil {
			panic(err)
		}
		return st
	}
	st := send(review.Submit, review.Submission{Title: "Q3 report", Author: "carol", Reviewers: []string{"ann", "bob"}})
	fmt.Println(st.To)
	send(review.Approve, review.Decision{By: "ann"})

	if err := w.Stop(ctx); err != nil {
		panic(err)
	}
	rec, err := producer.State(ctx, review.Workflow, "doc-1")
	if err != nil {
		panic(err)
	}
	var doc review.Document
	_ = json.Unmarshal(rec.Data, &doc)
	fmt.Println(rec.State, "by", doc.DecidedBy, "version", rec.Version)
	// Output:
	// notify ann, bob: "Q3 report" by carol
	// in_review
	// approved by ann version 3
}
