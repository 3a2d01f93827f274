package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// TestBrokerAdapterDialRetriesFirstConnect: a worker's connection dialled
// before its server is up connects once the server starts, within the
// connect timeout (nats.go's RetryOnFailedConnect); with no server it gives
// up after the connect timeout with an error that says so.
func TestBrokerAdapterDialRetriesFirstConnect(t *testing.T) {
	t.Parallel()
	t.Run("server starts later", func(t *testing.T) {
		t.Parallel()
		addr, release := natstest.ReserveAddr(t)
		defer release()
		var out natstest.Output
		log := zerolog.New(&out)
		type result struct {
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		began := time.Now()
		go func() {
			nc, err := queue.Dial(context.Background(), queue.Config{URLs: []string{"nats://" + addr}, ConnectTimeout: 60 * time.Second, Logger: &log})
			if err == nil {
				defer nc.Close()
				if !nc.IsConnected() {
					err = errors.New("Dial returned a connection that is not connected")
				}
			}
			done <- result{err, time.Since(began)}
		}()
		// Dialling, and failing: the server is not there yet.
		deadline := time.After(30 * time.Second)
		for !strings.Contains(out.String(), "NATS not reachable yet") {
			select {
			case r := <-done:
				t.Fatalf("Dial returned before any server was up: %v\n%s", r.err, out.String())
			case <-deadline:
				t.Fatalf("no failed attempt logged within 30s:\n%s", out.String())
			case <-time.After(20 * time.Millisecond): // a log line has no event to await
			}
		}
		release()
		srv, err := embedded.Start(embedded.Config{Listen: addr, DataDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown()
		select {
		case r := <-done:
			if r.err != nil {
				t.Fatalf("Dial after the server started: %v", r.err)
			}
			t.Logf("connected %s after Dial began", r.took.Round(time.Millisecond))
		case <-time.After(60 * time.Second):
			t.Fatalf("not connected within the connect timeout of 60s:\n%s", out.String())
		}
	})
	// A server that comes up and refuses our credentials is not a server
	// still missing: Dial says so at once, not at the timeout as
	// ErrNoServer (nats.go reports a refusal while it retries the first
	// connection only in the connection's last error).
	t.Run("server starts later and refuses us", func(t *testing.T) {
		t.Parallel()
		addr, release := natstest.ReserveAddr(t)
		defer release()
		var out natstest.Output
		log := zerolog.New(&out)
		done := make(chan error, 1)
		go func() {
			nc, err := queue.Dial(context.Background(), queue.Config{URLs: []string{"nats://" + addr}, User: "orderly", Password: "wrong",
				ConnectTimeout: 60 * time.Second, Logger: &log})
			if err == nil {
				nc.Close()
			}
			done <- err
		}()
		deadline := time.After(30 * time.Second)
		for !strings.Contains(out.String(), "NATS not reachable yet") {
			select {
			case err := <-done:
				t.Fatalf("Dial returned before any server was up: %v", err)
			case <-deadline:
				t.Fatalf("no failed attempt logged within 30s:\n%s", out.String())
			case <-time.After(20 * time.Millisecond): // a log line has no event to await
			}
		}
		release()
		srv, err := embedded.Start(embedded.Config{Listen: addr, DataDir: t.TempDir(), User: "orderly", Password: "right"})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown()
		started := time.Now()
		select {
		case err := <-done:
			if err == nil || errors.Is(err, queue.ErrNoServer) || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
				t.Fatalf("err = %v; want the server's refusal", err)
			}
			t.Logf("refused %s after the server started: %v", time.Since(started).Round(time.Millisecond), err)
		case <-time.After(30 * time.Second):
			t.Fatalf("Dial still waiting 30s after a server refused it:\n%s", out.String())
		}
	})
	t.Run("no server", func(t *testing.T) {
		t.Parallel()
		url := "nats://" + natstest.DeadAddr(t)
		began := time.Now()
		nc, err := queue.Dial(context.Background(), queue.Config{URLs: []string{url}, ConnectTimeout: time.Second})
		took := time.Since(began)
		if err == nil {
			nc.Close()
			t.Fatal("connected with no server")
		}
		if !errors.Is(err, queue.ErrNoServer) || !strings.Contains(err.Error(), "within 1s") || !strings.Contains(err.Error(), url) {
			t.Fatalf("err = %v; want ErrNoServer, naming %s and the timeout", err, url)
		}
		if took < time.Second || took > 20*time.Second {
			t.Errorf("gave up after %s; want the connect timeout of 1s", took)
		}
		t.Logf("gave up after %s: %v", took.Round(time.Millisecond), err)
	})
}
