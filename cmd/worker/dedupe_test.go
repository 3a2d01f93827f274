package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/natstest"
)

// TestIdempotencyKeyDedupeWindowFlag: --dedupe-window (or
// ORDERLY_DEDUPE_WINDOW) sets the job bucket's TTL; a bad value is a usage
// error.
func TestIdempotencyKeyDedupeWindowFlag(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0", "-1s", "500ms", "soon"} {
		var out bytes.Buffer
		err := run(context.Background(), []string{"--dedupe-window", v}, noenv, &out, &out)
		var usage *cli.UsageError
		if !errors.As(err, &usage) || !strings.Contains(err.Error(), "dedupe-window") {
			t.Errorf("--dedupe-window %s: %v, want a usage error naming the flag", v, err)
		}
	}

	srv := natstest.Server(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := map[string]string{"ORDERLY_DEDUPE_WINDOW": "90m"}
	done := make(chan error, 1)
	var stderr natstest.Output
	go func() {
		done <- run(ctx, []string{"--nats-url", srv.ClientURL(), "--http", "127.0.0.1:0", "--partitions", "2"},
			func(k string) string { return env[k] }, &stderr, &stderr)
	}()
	waitHTTP(t, "http://"+httpAddrOf(t, &stderr)+"/readyz", 200, 30*time.Second)

	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, "orderly_jobs_order")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := kv.Status(ctx); err != nil || st.TTL() != 90*time.Minute {
		t.Fatalf("job bucket %+v: %v, want TTL 90m", st, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not stop within 30s")
	}
}
