package jsapi

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/embedded"
)

// TestReplyMuxGivesUpOnUnanswered: a request nobody answers is given up on
// by a later send once its deadline has passed, so the mux holds nothing for
// ever; an answered one gets its reply.
func TestReplyMuxGivesUpOnUnanswered(t *testing.T) {
	nc := connect(t)
	if _, err := nc.Subscribe("silent", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var r ReplyMux
	silent := make(chan Reply, 1)
	if _, err := r.Send(nc, nats.NewMsg("silent"), silent, 7, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(silent) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the unanswered request was never given up on")
		}
		echo := make(chan Reply, 1)
		m := nats.NewMsg("echo")
		m.Data = []byte("hi")
		if _, err := r.Send(nc, m, echo, 1, time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-echo:
			if got.I != 1 || got.Msg == nil || string(got.Msg.Data) != "hi" {
				t.Fatalf("echo reply %+v", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no echo reply")
		}
	}
	if got := <-silent; got.I != 7 || got.Msg != nil {
		t.Fatalf("given up: %+v", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) != 0 {
		t.Fatalf("%d requests still pending", len(r.pending))
	}
}

// TestReplyMuxClose: Close answers every request still awaited (with no
// message), ends the reply subscription, and refuses later sends; the
// connection stays open.
func TestReplyMuxClose(t *testing.T) {
	nc := connect(t)
	if _, err := nc.Subscribe("silent", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	var r ReplyMux
	waiting := make(chan Reply, 1)
	if _, err := r.Send(nc, nats.NewMsg("silent"), waiting, 3, time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := nc.NumSubscriptions(); n != 2 {
		t.Fatalf("%d subscriptions, want the test's and the mux's", n)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-waiting:
		if got.I != 3 || got.Msg != nil {
			t.Fatalf("after Close: %+v", got)
		}
	default:
		t.Fatal("the awaited request got no answer from Close")
	}
	if _, err := r.Send(nc, nats.NewMsg("silent"), waiting, 4, time.Minute); !errors.Is(err, ErrMuxClosed) {
		t.Fatalf("send after Close: %v", err)
	}
	if n := nc.NumSubscriptions(); n != 1 || !nc.IsConnected() {
		t.Fatalf("%d subscriptions, connected %v: want the test's, on an open connection", n, nc.IsConnected())
	}
}

// connect starts a server and connects to it, until the test ends.
func connect(t *testing.T) *nats.Conn {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
