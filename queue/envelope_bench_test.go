package queue_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/queue"
)

// The encode/decode work the runtime does per event, without a broker:
//
//	go test -run '^$' -bench 'Envelope|Status' -benchmem ./queue/

// envelopeBody is a 256-byte event body, the size e2ebench sends.
var envelopeBody = func() []byte {
	const fixed = `{"event":"ping","data":{"p":""}}`
	return []byte(`{"event":"ping","data":{"p":"` + strings.Repeat("x", 256-len(fixed)) + `"}}`)
}()

// BenchmarkEnvelopeDecode decodes an event body with encoding/json: the
// reference for the worker's own decoder, which BenchmarkHotEnvelopeDecode in
// package worker measures on the same bodies.
func BenchmarkEnvelopeDecode(b *testing.B) {
	for _, c := range []struct {
		name string
		body []byte
	}{
		{"256B", envelopeBody},
		{"no-data", []byte(`{"event":"ping"}`)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				var env contract.Envelope
				if err := json.Unmarshal(c.body, &env); err != nil || env.Event != "ping" {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEnvelopeEncode encodes an event as Publish does.
func BenchmarkEnvelopeEncode(b *testing.B) {
	var env contract.Envelope
	if err := json.Unmarshal(envelopeBody, &env); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := queue.MarshalEnvelope(&env); err != nil {
			b.Fatal(err)
		}
	}
}

func typicalStatus() *contract.Status {
	return &contract.Status{
		Workflow: "order", Key: "order-12345", JobID: "Pq3x5Wd8e9CB1V2nFzHkLm", Event: "start_processing",
		From: "idle", To: "processing", Version: 7, At: time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC),
		Settled: true,
	}
}

// BenchmarkStatusEncode encodes a status as PublishStatus does, once per
// event applied.
func BenchmarkStatusEncode(b *testing.B) {
	st := typicalStatus()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := queue.MarshalStatus(st); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStatusDecode decodes a status as SubscribeStatus does for every
// status a watcher receives.
func BenchmarkStatusDecode(b *testing.B) {
	body, err := json.Marshal(typicalStatus())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var st contract.Status
		if err := queue.UnmarshalStatus(body, &st); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateKey checks a key, as the dispatcher does per event.
func BenchmarkValidateKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := contract.ValidateKey("order-12345"); err != nil {
			b.Fatal(err)
		}
	}
}
