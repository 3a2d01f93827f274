package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/orderly-dev/orderly/internal/jsonx"
)

// The JSON of the three values on the wire. Each encoder writes exactly what
// encoding/json.Marshal writes, and each decoder returns what
// encoding/json.Unmarshal returns (DecodeEnvelope made strict about member
// names); the fuzz tests in codec_test.go check both against encoding/json.
//
// Written by hand (internal/jsonx) only on the per-event paths: the worker
// decodes an envelope per event, encodes a status per event applied and the
// state record per commit, and a producer encodes an envelope per event.
// There encoding/json's reflection and allocations were a sixth of the no-op
// pipeline's CPU (BENCHMARKS.md, 2026-11-25: 16 % of the profile, 1.7 %
// after). Statuses are decoded by watchers and state records once per
// activation of a key, after a KV round trip: encoding/json there.
//
// Figures: go test -run '^$' -bench Codec -benchmem ./contract/, 2026-11-30,
// best of 6 to 26 runs on 2 cores shared with other jobs (load average about
// 14, so each is a few times the idle machine's; the ratios and allocations
// are what count), by hand against encoding/json, ns/op and allocs/op.

// ErrMalformed is returned (wrapped) by DecodeEnvelope for a body that is not
// an event envelope; the worker dead-letters such an event with CodeMalformed.
var ErrMalformed = errors.New(`event is not {"event": "...", "data": ...} JSON`)

// MarshalEnvelope returns the JSON of ev, as json.Marshal does.
// BenchmarkCodecEnvelopeEncode (256-byte body): 387 ns, 1 alloc against
// 2,028 ns, 1 alloc (encoding/json validates and compacts Data again).
func MarshalEnvelope(ev *Envelope) ([]byte, error) {
	b := make([]byte, 0, len(`{"event":"","data":}`)+len(ev.Event)+len(ev.Data))
	b = append(b, `{"event":`...)
	b = jsonx.AppendString(b, ev.Event)
	if len(ev.Data) > 0 {
		var ok bool
		if b, ok = jsonx.AppendRaw(append(b, `,"data":`...), ev.Data); !ok {
			return json.Marshal(ev)
		}
	}
	return append(b, '}'), nil
}

// DecodeEnvelope decodes an event body strictly: it must be a JSON object
// whose members are "event" (a non-empty string) and optionally "data" (any
// JSON), each at most once, their names spelled exactly. encoding/json alone
// would take {"Event":...} (it matches names case-insensitively), let the
// last of two "event" members win, and ignore unknown members: a producer's
// mistake would be applied as some other event instead of reported. The
// error wraps ErrMalformed and says what is wrong.
//
// BenchmarkCodecEnvelopeDecode: 256-byte body 432 ns, 2 allocs against 3,274
// ns, 8 allocs (encoding/json and CheckFields, the fallback); no data 83 ns,
// 1 alloc against 791 ns, 6 allocs.
func DecodeEnvelope(data []byte) (Envelope, error) {
	env, ok := decodeEnvelope(data)
	if !ok {
		var err error
		if env, err = strictEnvelope(data); err != nil {
			return Envelope{}, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
	}
	if env.Event == "" {
		return Envelope{}, fmt.Errorf("%w: the event name is empty", ErrMalformed)
	}
	return env, nil
}

// strictEnvelope is DecodeEnvelope for what decodeEnvelope does not take:
// encoding/json decodes the values, CheckFields checks the names.
func strictEnvelope(data []byte) (Envelope, error) {
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Envelope{}, err
	}
	if err := jsonx.CheckFields(data, "event", "data"); err != nil {
		return Envelope{}, err
	}
	return env, nil
}

// decodeEnvelope decodes {"event":"...","data":...} with data optional, the
// names spelled exactly, in that order; ok is false for anything else, which
// includes every body strictEnvelope refuses.
func decodeEnvelope(data []byte) (_ Envelope, ok bool) {
	d := jsonx.NewDecoder(data)
	d.Open()
	env := Envelope{Event: d.Key("event").String()}
	if d.Has("data") {
		env.Data = d.Key("data").Raw()
	}
	d.Close()
	return env, d.Finish()
}

// MarshalStatus returns the JSON of st, as json.Marshal does.
// BenchmarkCodecStatusEncode: 319 ns, 1 alloc against 1,040 ns, 2 allocs.
func MarshalStatus(st *Status) ([]byte, error) {
	b := make([]byte, 0, 256) // a typical status takes about 200 bytes
	b = append(b, `{"workflow":`...)
	b = jsonx.AppendString(b, st.Workflow)
	b = append(b, `,"key":`...)
	b = jsonx.AppendString(b, st.Key)
	b = append(b, `,"job_id":`...)
	b = jsonx.AppendString(b, st.JobID)
	b = append(b, `,"event":`...)
	b = jsonx.AppendString(b, st.Event)
	b = append(b, `,"from":`...)
	b = jsonx.AppendString(b, st.From)
	b = append(b, `,"to":`...)
	b = jsonx.AppendString(b, st.To)
	b = append(b, `,"version":`...)
	b = strconv.AppendUint(b, st.Version, 10)
	b = append(b, `,"at":`...)
	b, ok := jsonx.AppendTime(b, st.At)
	if !ok {
		return json.Marshal(st) // for its error
	}
	b = append(b, `,"settled":`...)
	b = strconv.AppendBool(b, st.Settled)
	if st.Error != nil {
		b = append(b, `,"error":{"code":`...)
		b = jsonx.AppendString(b, st.Error.Code)
		b = append(b, `,"message":`...)
		b = jsonx.AppendString(b, st.Error.Message)
		b = append(b, '}')
	}
	if st.Action != "" {
		b = append(b, `,"action":`...)
		b = jsonx.AppendString(b, st.Action)
	}
	if st.Attempt != 0 {
		b = append(b, `,"attempt":`...)
		b = strconv.AppendInt(b, int64(st.Attempt), 10)
	}
	if !st.ScheduledFor.IsZero() {
		b = append(b, `,"scheduled_for":`...)
		if b, ok = jsonx.AppendTime(b, st.ScheduledFor); !ok {
			return json.Marshal(st) // for its error
		}
	}
	return append(b, '}'), nil
}

// DecodeStatus decodes a status as json.Unmarshal does: members it does not
// know are ignored, since the contract may add fields. encoding/json, not by
// hand: statuses are decoded by those who watch them, not on the worker's
// per-event path. (BenchmarkCodecStatusDecode: 3,263 ns, 11 allocs; the
// hand-written decoder it replaced took 419 ns, 1 alloc.)
func DecodeStatus(data []byte) (Status, error) {
	var st Status
	err := json.Unmarshal(data, &st)
	return st, err
}

// MarshalState returns the JSON of r, as json.Marshal does.
// BenchmarkCodecStateEncode: a dedup log of 1 sequence 323 ns, 1 alloc
// against 1,657 ns, 2 allocs; of 32 (a busy key's) 1,469 ns, 1 alloc
// against 2,062 ns, 2 allocs.
func MarshalState(r *StateRecord) ([]byte, error) {
	// The capacity is a guess at the size: a sequence number with its comma
	// takes 11 bytes or less until the stream has seen ten billion events.
	b := make([]byte, 0, 128+len(r.State)+len(r.Data)+11*len(r.Applied)+96*len(r.Pending))
	b = append(b, `{"state":`...)
	b = jsonx.AppendString(b, r.State)
	b = append(b, `,"version":`...)
	b = strconv.AppendUint(b, r.Version, 10)
	b = append(b, `,"data":`...)
	b, ok := jsonx.AppendRaw(b, r.Data)
	if !ok {
		return json.Marshal(r)
	}
	b = append(b, `,"updated_at":`...)
	if b, ok = jsonx.AppendTime(b, r.UpdatedAt); !ok {
		return json.Marshal(r) // for its error
	}
	if len(r.Applied) > 0 {
		b = append(b, `,"applied":[`...)
		for i, seq := range r.Applied {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, seq, 10)
		}
		b = append(b, ']')
	}
	if len(r.Pending) > 0 {
		b = append(b, `,"pending":[`...)
		for i, p := range r.Pending {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"id":`...)
			b = jsonx.AppendString(b, p.ID)
			b = append(b, `,"action":`...)
			b = jsonx.AppendString(b, p.Action)
			b = append(b, `,"job_id":`...)
			b = jsonx.AppendString(b, p.JobID)
			b = append(b, `,"attempt":`...)
			b = strconv.AppendInt(b, int64(p.Attempt), 10)
			if !p.Since.IsZero() {
				b = append(b, `,"since":`...)
				if b, ok = jsonx.AppendTime(b, p.Since); !ok {
					return json.Marshal(r) // for its error
				}
			}
			if !p.NextAttemptAt.IsZero() {
				b = append(b, `,"next_attempt_at":`...)
				if b, ok = jsonx.AppendTime(b, p.NextAttemptAt); !ok {
					return json.Marshal(r)
				}
			}
			if p.LastError != "" {
				b = append(b, `,"last_error":`...)
				b = jsonx.AppendString(b, p.LastError)
			}
			if p.TraceParent != "" {
				b = append(b, `,"traceparent":`...)
				b = jsonx.AppendString(b, p.TraceParent)
			}
			if p.TraceState != "" {
				b = append(b, `,"tracestate":`...)
				b = jsonx.AppendString(b, p.TraceState)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"entered":`...)
	b = strconv.AppendUint(b, r.Entered, 10)
	return append(b, '}'), nil
}

// DecodeState decodes a state record as json.Unmarshal does: members it
// does not know are ignored, since the contract may add fields.
// encoding/json, not by hand: the worker decodes a key's record once per
// activation, after a round trip to the state bucket that costs far more.
// (BenchmarkCodecStateDecode, dedup log of 1 / 32: 4,776 / 9,478 ns, 10 / 15
// allocs; the hand-written decoder it replaced took 928 / 1,323 ns, 3
// allocs. In BENCHMARKS.md's 100,000-key run, where every event activates
// its key, all the hand-written codecs together took it from 20,900 to
// 21,420 events/s.)
func DecodeState(data []byte) (StateRecord, error) {
	var r StateRecord
	err := json.Unmarshal(data, &r)
	return r, err
}
