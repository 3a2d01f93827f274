package jsapi

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestBrokerAdapterPublishErrorsByCode: a real server's refusals map to
// Orderly's errors by JetStream's error codes: a discard-new stream at its
// limit of messages, or of bytes, is ErrQueueFull; a message over the
// stream's largest is ErrPayloadTooLarge; no stream is ErrNotProvisioned.
func TestBrokerAdapterPublishErrorsByCode(t *testing.T) {
	nc := connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, cfg := range []jetstream.StreamConfig{
		{Name: "MSGS", Subjects: []string{"msgs"}, Discard: jetstream.DiscardNew, MaxMsgs: 1, MaxMsgSize: 100},
		{Name: "BYTES", Subjects: []string{"bytes"}, Discard: jetstream.DiscardNew, MaxBytes: 200},
	} {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(subject string, size int) error {
		_, err := js.Publish(ctx, subject, []byte(strings.Repeat("x", size)))
		if err == nil {
			return nil
		}
		return PublishError(subject, err)
	}
	if err := publish("msgs", 10); err != nil {
		t.Fatal(err)
	}
	if err := publish("msgs", 10); !errors.Is(err, ErrQueueFull) {
		t.Errorf("past MaxMsgs: %v, want ErrQueueFull", err)
	}
	if err := publish("msgs", 101); !errors.Is(err, ErrPayloadTooLarge) {
		t.Errorf("past MaxMsgSize: %v, want ErrPayloadTooLarge", err)
	}
	var full error
	for range 10 {
		if full = publish("bytes", 60); full != nil {
			break
		}
	}
	if !errors.Is(full, ErrQueueFull) {
		t.Errorf("past MaxBytes: %v, want ErrQueueFull", full)
	}
	if err := publish("nowhere", 1); !errors.Is(err, ErrNotProvisioned) {
		t.Errorf("no stream: %v, want ErrNotProvisioned", err)
	}
}
