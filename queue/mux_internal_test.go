package queue

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/embedded"
)

// TestReplyMuxGivesUpOnUnanswered: a request nobody answers is given up on
// by a later send once its deadline has passed, so the mux holds nothing for
// ever; an answered one gets its reply.
func TestReplyMuxGivesUpOnUnanswered(t *testing.T) {
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe("silent", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	var r replyMux
	silent := make(chan muxReply, 1)
	if _, err := r.send(nc, nats.NewMsg("silent"), silent, 7, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(silent) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the unanswered request was never given up on")
		}
		echo := make(chan muxReply, 1)
		m := nats.NewMsg("echo")
		m.Data = []byte("hi")
		if _, err := r.send(nc, m, echo, 1, time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-echo:
			if got.i != 1 || got.msg == nil || string(got.msg.Data) != "hi" {
				t.Fatalf("echo reply %+v", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no echo reply")
		}
	}
	if got := <-silent; got.i != 7 || got.msg != nil {
		t.Fatalf("given up: %+v", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) != 0 {
		t.Fatalf("%d requests still pending", len(r.pending))
	}
}
