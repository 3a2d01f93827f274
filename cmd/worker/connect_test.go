package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// TestBrokerAdapterWorkerConnectsWhenItsServerComes: a worker started
// before its NATS server keeps trying (nats.go's RetryOnFailedConnect),
// connects once the server starts at its address, within
// --connect-timeout, and gets ready; with no server it gives up after
// --connect-timeout with an error naming the URL and the timeout.
func TestBrokerAdapterWorkerConnectsWhenItsServerComes(t *testing.T) {
	t.Parallel()
	t.Run("server comes", func(t *testing.T) {
		t.Parallel()
		natsAddr, release := natstest.ReserveAddr(t)
		defer release()
		w := runInProcess(t, nil, "--nats-url", "nats://"+natsAddr, "--connect-timeout", "60s", "--http", "127.0.0.1:0")
		waitLog(t, w.out, "NATS not reachable yet", 30*time.Second)
		release()
		began := time.Now()
		stop := startAuthless(t, natsAddr)
		defer stop()
		waitHTTP(t, "http://"+httpAddrOf(t, w.out)+"/readyz", 200, 30*time.Second)
		t.Logf("ready %s after the server started", time.Since(began).Round(time.Millisecond))
		select {
		case <-w.done:
			t.Fatalf("run returned: %v", w.err)
		default:
		}
	})
	t.Run("no server", func(t *testing.T) {
		t.Parallel()
		url := "nats://" + natstest.DeadAddr(t)
		began := time.Now()
		w := runInProcess(t, nil, "--nats-url", url, "--connect-timeout", "2s", "--http", "127.0.0.1:0")
		err := w.exited(t, 30*time.Second)
		took := time.Since(began)
		if !errors.Is(err, queue.ErrNoServer) || !strings.Contains(err.Error(), "within 2s") || !strings.Contains(err.Error(), url) {
			t.Fatalf("after --connect-timeout 2s: %v; want ErrNoServer naming %s and the timeout", err, url)
		}
		if took < 2*time.Second {
			t.Errorf("gave up after %s, before --connect-timeout 2s", took)
		}
	})
}
