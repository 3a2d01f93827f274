package contract

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The codecs against encoding/json on the values the runtime handles:
//
//	go test -run '^$' -bench Codec -benchmem ./contract/

// benchBody is a 256-byte event body, the size e2ebench sends.
var benchBody = func() []byte {
	const fixed = `{"event":"ping","data":{"p":""}}`
	return []byte(`{"event":"ping","data":{"p":"` + strings.Repeat("x", 256-len(fixed)) + `"}}`)
}()

func benchStatus() *Status {
	return &Status{
		Workflow: "order", Key: "order-12345", JobID: "Pq3x5Wd8e9CB1V2nFzHkLm", Event: "start_processing",
		From: "idle", To: "processing", Version: 7, At: time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC),
		Settled: true,
	}
}

// benchState is a busy key's record: a dedup log of applied sequences, as
// the worker keeps it (32 at most).
func benchState(applied int) *StateRecord {
	r := &StateRecord{
		State: "ready", Version: 1000, Data: json.RawMessage(`{"n":12,"seen":[1,2,3]}`),
		UpdatedAt: time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC), Entered: 1,
	}
	for i := range applied {
		r.Applied = append(r.Applied, uint64(1_000_000+i))
	}
	return r
}

// BenchmarkCodecEnvelopeDecode: the worker, once per event.
func BenchmarkCodecEnvelopeDecode(b *testing.B) {
	for _, c := range []struct {
		name string
		body []byte
	}{{"256B", benchBody}, {"no-data", []byte(`{"event":"ping"}`)}} {
		b.Run(c.name+"/contract", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if env, err := DecodeEnvelope(c.body); err != nil || env.Event != "ping" {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				// What the strict decoder does without its fast path.
				if env, err := strictEnvelope(c.body); err != nil || env.Event != "ping" {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCodecEnvelopeEncode: a producer, once per event published.
func BenchmarkCodecEnvelopeEncode(b *testing.B) {
	env, err := DecodeEnvelope(benchBody)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("contract", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := MarshalEnvelope(&env); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(&env); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCodecStatusEncode: the worker, once per event applied.
func BenchmarkCodecStatusEncode(b *testing.B) {
	st := benchStatus()
	b.Run("contract", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := MarshalStatus(st); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(st); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCodecStatusDecode: a watcher, once per status received
// (encoding/json; see DecodeStatus).
func BenchmarkCodecStatusDecode(b *testing.B) {
	body, err := json.Marshal(benchStatus())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeStatus(body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCodecStateEncode: the worker, once per commit of a key.
func BenchmarkCodecStateEncode(b *testing.B) {
	for _, applied := range []int{1, 32} {
		r := benchState(applied)
		b.Run("applied="+strconv.Itoa(applied)+"/contract", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := MarshalState(r); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("applied="+strconv.Itoa(applied)+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := json.Marshal(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCodecStateDecode: the worker, once per activation of a key
// (encoding/json; see DecodeState).
func BenchmarkCodecStateDecode(b *testing.B) {
	for _, applied := range []int{1, 32} {
		val, err := json.Marshal(benchState(applied))
		if err != nil {
			b.Fatal(err)
		}
		b.Run("applied="+strconv.Itoa(applied), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeState(val); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkValidateKey checks a key, as the dispatcher does per event.
func BenchmarkValidateKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateKey("order-12345"); err != nil {
			b.Fatal(err)
		}
	}
}
