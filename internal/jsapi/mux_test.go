package jsapi

import (
	"errors"
	"strings"
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

// TestReplyMuxSendFunc: a request answered by several messages (a batched
// direct get's) hands each to its function, in order, until the function
// says it has all; one never answered is given up on (nil), and so is one
// still awaited when the mux closes.
func TestReplyMuxSendFunc(t *testing.T) {
	nc := connect(t)
	if _, err := nc.Subscribe("silent", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("batch", func(m *nats.Msg) {
		for _, s := range []string{"a", "b", "c"} {
			_ = nc.Publish(m.Reply, []byte(s))
		}
		end := nats.NewMsg(m.Reply)
		end.Header.Set("Status", "204")
		_ = nc.PublishMsg(end)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var r ReplyMux
	got := make(chan *nats.Msg, 10)
	collect := func(m *nats.Msg) bool {
		got <- m
		return m != nil && m.Header.Get("Status") == ""
	}
	if _, err := r.SendFunc(nc, nats.NewMsg("batch"), collect, time.Minute); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for len(seen) < 4 {
		select {
		case m := <-got:
			if m == nil {
				t.Fatalf("given up on after %q", seen)
			}
			seen = append(seen, string(m.Data)+m.Header.Get("Status"))
		case <-time.After(10 * time.Second):
			t.Fatalf("replies %q, want a b c and the end", seen)
		}
	}
	if strings.Join(seen, " ") != "a b c 204" {
		t.Fatalf("replies %q", seen)
	}

	silent := make(chan *nats.Msg, 1)
	if _, err := r.SendFunc(nc, nats.NewMsg("silent"), func(m *nats.Msg) bool { silent <- m; return true }, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(silent) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the unanswered request was never given up on")
		}
		time.Sleep(20 * time.Millisecond)
		if _, err := r.Send(nc, nats.NewMsg("silent"), make(chan Reply, 1), 0, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if m := <-silent; m != nil {
		t.Fatalf("given up: %+v", m)
	}

	closing := make(chan *nats.Msg, 1)
	if _, err := r.SendFunc(nc, nats.NewMsg("silent"), func(m *nats.Msg) bool { closing <- m; return true }, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-closing:
		if m != nil {
			t.Fatalf("after Close: %+v", m)
		}
	default:
		t.Fatal("the awaited request got no answer from Close")
	}
	if len(got) != 0 {
		t.Fatalf("%d more replies after the end", len(got))
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
