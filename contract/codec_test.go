package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/internal/jsonx"
)

// The codecs against encoding/json: the same bytes out, the same values and
// errors in (envelopes: encoding/json made strict about names), and what an
// encoder writes decodes back to a value that encodes to the same bytes.
// The fuzz targets run in CI for a few seconds each (make fuzz).

// strictRef is the reference of DecodeEnvelope: json.Unmarshal, then
// encoding/json's own tokens must show an object whose names are "event"
// and "data" exactly, each at most once, and the event name must not be
// empty.
func strictRef(data []byte) (Envelope, error) {
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return Envelope{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return Envelope{}, errors.New("not an object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Envelope{}, err
		}
		name := tok.(string)
		if name != "event" && name != "data" || seen[name] {
			return Envelope{}, fmt.Errorf("field %q", name)
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return Envelope{}, err
		}
	}
	if env.Event == "" {
		return Envelope{}, errors.New("empty event")
	}
	return env, nil
}

func checkDecodeEnvelope(t *testing.T, data []byte) {
	t.Helper()
	want, wantErr := strictRef(data)
	got, err := DecodeEnvelope(data)
	if (err == nil) != (wantErr == nil) || !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeEnvelope(%q) = %#v, %v; strict encoding/json: %#v, %v", data, got, err, want, wantErr)
	}
	if err != nil && !errors.Is(err, ErrMalformed) {
		t.Fatalf("DecodeEnvelope(%q): %v does not wrap ErrMalformed", data, err)
	}
	// The fast path takes only what the general one takes, with its result.
	if fast, ok := decodeEnvelope(data); ok {
		if slow, err := strictEnvelope(data); err != nil || !reflect.DeepEqual(fast, slow) {
			t.Fatalf("decodeEnvelope(%q) = %#v; strictEnvelope: %#v, %v", data, fast, slow, err)
		}
	}
}

// envelopeInputs are envelopes decodeEnvelope takes (the first eight) and
// others it must leave to strictEnvelope.
var envelopeInputs = []string{
	`{"event":"ping","data":{"p":"` + strings.Repeat("x", 224) + `"}}`,
	`{"event":"ping"}`,
	`{"event":"ping","data":null}`,
	`{"event":"","data":1}`,
	`{"event":"é","data":[1, {"a" : "<&>"}]}`,
	" {\n\t\"event\" : \"ping\" ,\r\"data\" : \"x\" } ",
	`{"event":"ping","data":"\u00e9\"\\"}`,
	`{"event":"ping","data":-1.5e+3}`,
	`{"data":{},"event":"ping"}`,
	`{"Event":"ping"}`,
	`{"event":"ping","event":"pong"}`,
	`{"event":"ping","data":1,"data":2}`,
	`{"event":"ping","extra":1}`,
	`{"event":"p\u0069ng"}`,
	`{"event":"\xff"}`,
	`{"event":null}`,
	`{"event":1}`,
	`{"event":"ping","data":}`,
	`{"event":"ping","data":{"a":1}`,
	`{"event":"ping","data":01}`,
	`{"event":"ping"}x`,
	`{"event":"ping"}{}`,
	`{"event":"ping","data":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`,
	`{"event":"ping","data":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
	`{}`, `[]`, `null`, `""`, ``, `{`, `{"event":"ping",}`,
	`{"EVENT":"ping"}`, `{"event":"ping","Event":"pong"}`, `{"ev\u0065nt":"ping"}`, `{"data":1,"event":"ping","data":2}`,
	`{"event":"confirm_payment","event":"start_processing"}`, `{"Event":"start_processing"}`, `{"event":"ping","Data":{}}`,
}

// Each body DecodeEnvelope refuses, and why.
func TestDecodeEnvelopeStrict(t *testing.T) {
	for in, want := range map[string]error{
		`{"Event":"start_processing"}`:                           jsonx.ErrUnknownField,
		`{"event":"confirm_payment","event":"start_processing"}`: jsonx.ErrDuplicateField,
		`{"event":"ping","data":1,"data":2}`:                     jsonx.ErrDuplicateField,
		`{"event":"ping","extra":1}`:                             jsonx.ErrUnknownField,
		`{"event":"ping","Data":{}}`:                             jsonx.ErrUnknownField,
		`null`:                                                   jsonx.ErrNotObject,
		`{"data":{}}`:                                            ErrMalformed,
		`{"event":""}`:                                           ErrMalformed,
	} {
		env, err := DecodeEnvelope([]byte(in))
		if !errors.Is(err, want) || !errors.Is(err, ErrMalformed) || env.Event != "" {
			t.Errorf("DecodeEnvelope(%s) = %+v, %v; want %v", in, env, err, want)
		}
	}
	for _, in := range []string{`{"data":{},"event":"ping"}`, `{"ev\u0065nt":"ping"}`, ` {"event" : "ping"} `} {
		if env, err := DecodeEnvelope([]byte(in)); err != nil || env.Event != "ping" {
			t.Errorf("DecodeEnvelope(%s) = %+v, %v", in, env, err)
		}
	}
}

func TestDecodeEnvelope(t *testing.T) {
	for i, in := range envelopeInputs {
		checkDecodeEnvelope(t, []byte(in))
		if _, ok := decodeEnvelope([]byte(in)); !ok && i < 8 {
			t.Errorf("decodeEnvelope left %s to encoding/json", in)
		}
	}
	// Like encoding/json, the data is a copy, not a part of the message.
	in := []byte(`{"event":"ping","data":{}}`)
	env, err := DecodeEnvelope(in)
	if err != nil {
		t.Fatal(err)
	}
	in[len(in)-3] = '['
	if string(env.Data) != "{}" {
		t.Errorf("data %s changed with the message", env.Data)
	}
}

func FuzzDecodeEnvelope(f *testing.F) {
	for _, in := range envelopeInputs {
		f.Add([]byte(in))
	}
	f.Fuzz(checkDecodeEnvelope)
}

// checkRoundTrip checks that back, decoded from got, encodes as
// encoding/json encodes it, and that those bytes survive a round trip
// unchanged. (got's own may not: like encoding/json, an encoder writes
// invalid UTF-8 as \ufffd, which decodes to U+FFFD, written as itself the
// next time.)
func checkRoundTrip[T any](t *testing.T, got []byte, back T, marshal func(*T) ([]byte, error), decode func([]byte) (T, error)) {
	t.Helper()
	again, err := marshal(&back)
	if want, wantErr := json.Marshal(&back); err != nil || wantErr != nil || string(again) != string(want) {
		t.Fatalf("encoding %s decoded: %s, %v; encoding/json: %s, %v", got, again, err, want, wantErr)
	}
	back2, err := decode(again)
	if err != nil {
		t.Fatalf("decoding %s: %v", again, err)
	}
	if again2, err := marshal(&back2); err != nil || string(again2) != string(again) {
		t.Fatalf("round trip of %s: %s, %v", again, again2, err)
	}
}

// checkMarshalEnvelope checks MarshalEnvelope against encoding/json, and
// the round trip.
func checkMarshalEnvelope(t *testing.T, ev Envelope) {
	t.Helper()
	want, wantErr := json.Marshal(ev)
	got, err := MarshalEnvelope(&ev)
	if (err == nil) != (wantErr == nil) || string(got) != string(want) {
		t.Fatalf("MarshalEnvelope(%q, %q) = %s, %v; encoding/json: %s, %v", ev.Event, ev.Data, got, err, want, wantErr)
	}
	if err != nil || ev.Event == "" {
		return
	}
	checkDecodeEnvelope(t, got)
	back, err := DecodeEnvelope(got)
	if err != nil {
		t.Fatalf("DecodeEnvelope(%s): %v", got, err)
	}
	checkRoundTrip(t, got, back, MarshalEnvelope, DecodeEnvelope)
}

func TestMarshalEnvelope(t *testing.T) {
	for _, ev := range []Envelope{
		{}, {Event: "ping"}, {Event: "ping", Data: json.RawMessage{}}, {Event: "ping", Data: json.RawMessage(`null`)},
		{Event: "ping", Data: json.RawMessage(envelopeData)},
		{Event: "a<b>&\"\\\n\x00é\u2028\xff", Data: json.RawMessage(`{"k":[1,2,{"x":"y"}]}`)},
		{Event: "spaced", Data: json.RawMessage(` { "k" : 1 } `)},
		{Event: "html", Data: json.RawMessage(`"<&>\u2028"`)},
		{Event: "invalid", Data: json.RawMessage(`{"k":}`)},
	} {
		checkMarshalEnvelope(t, ev)
	}
}

// envelopeData is the data of e2ebench's 256-byte event.
var envelopeData = `{"p":"` + strings.Repeat("x", 256-len(`{"event":"ping","data":{"p":""}}`)) + `"}`

func FuzzMarshalEnvelope(f *testing.F) {
	f.Add("ping", []byte(envelopeData), false)
	f.Add("", []byte(nil), true)
	f.Add("ping", []byte{}, false)
	f.Add("é<>&\u2028\xff", []byte(`"<>&\u2028"`), false)
	f.Add("ping", []byte(" [1, 2]\n"), false)
	f.Add("ping", []byte(`{"a":`), false)
	f.Fuzz(func(t *testing.T, event string, data []byte, nilData bool) {
		if nilData {
			data = nil
		}
		checkMarshalEnvelope(t, Envelope{Event: event, Data: data})
	})
}

// checkStatus checks MarshalStatus against encoding/json, DecodeStatus on
// what it writes, and the round trip.
func checkStatus(t *testing.T, st Status) {
	t.Helper()
	want, wantErr := json.Marshal(&st)
	got, err := MarshalStatus(&st)
	if (err == nil) != (wantErr == nil) || string(got) != string(want) {
		t.Fatalf("MarshalStatus(%+v) = %s, %v; encoding/json: %s, %v", st, got, err, want, wantErr)
	}
	if err != nil {
		return
	}
	back, err := DecodeStatus(got)
	if err != nil {
		t.Fatalf("DecodeStatus(%s): %v", got, err)
	}
	checkRoundTrip(t, got, back, MarshalStatus, DecodeStatus)
}

func TestStatusCodec(t *testing.T) {
	st := *benchStatus()
	checkStatus(t, st)
	st.Error = &StatusError{Code: CodeInvalidTransition, Message: `"ship" is not allowed in state "idle"`}
	st.Action, st.Attempt = "charge", 3
	checkStatus(t, st)
	st.Error, st.Attempt = &StatusError{}, -1
	checkStatus(t, st)
	st.At = time.Date(2026, 11, 25, 10, 0, 0, 0, time.FixedZone("", -5*3600))
	checkStatus(t, st)
	st.At = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) // Marshal fails
	checkStatus(t, st)
	checkStatus(t, Status{Workflow: "<é>", Key: "\u2028", Event: "\xff", Version: 1<<64 - 1, Attempt: -1 << 63})
	st = *benchStatus()
	st.ScheduledFor = time.Date(2026, 11, 30, 9, 53, 1, 68845360, time.UTC)
	checkStatus(t, st)
	st.ScheduledFor = time.Date(2026, 11, 30, 9, 53, 1, 0, time.FixedZone("", 3600))
	checkStatus(t, st)
	st.ScheduledFor = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) // Marshal fails
	checkStatus(t, st)
}

// Statuses may gain fields: a decoder takes them and ignores what it does
// not know.
func TestDecodeStatusTakesNewFields(t *testing.T) {
	in := `{"workflow":"w","key":"k","job_id":"j","event":"e","from":"a","to":"b","version":1,"at":"2026-11-25T10:00:00Z","settled":true,"new_field":{"x":1}}`
	st, err := DecodeStatus([]byte(in))
	if err != nil || st.Workflow != "w" || st.Version != 1 || !st.Settled {
		t.Fatalf("DecodeStatus = %+v, %v", st, err)
	}
	if _, err := DecodeStatus([]byte(`{"workflow":1}`)); err == nil {
		t.Fatal("DecodeStatus took a number for a string")
	}
}

func FuzzMarshalStatus(f *testing.F) {
	f.Add("order", "order-12345", "job", "start", "idle", "processing", uint64(7), int64(1e9), int64(123456789), 0, true, false, "", "", "", 0, int64(0))
	f.Add("", "", "", "", "", "", uint64(0), int64(-62135596800), int64(0), 0, false, true, "", "", "", 0, int64(0))
	f.Add("<&>", "\u2028", "\xff", "\"\\", "\n\t\x01", "é", uint64(1<<64-1), int64(1e9), int64(1), 3600, false, true,
		CodeGuardRefused, "no \"way\"", "charge", -1, int64(1e9))
	f.Add("w", "k", "j", "e", "f", "t", uint64(1), int64(253402300800), int64(0), 0, true, false, "", "", "", 1, int64(0))       // year 10000
	f.Add("w", "k", "j", "e", "f", "t", uint64(1), int64(1e9), int64(0), 86400, true, false, "", "", "", 1, int64(253402300800)) // 24h offset; scheduled for year 10000
	f.Fuzz(func(t *testing.T, workflow, key, jobID, event, from, to string, version uint64, sec, nsec int64, offset int,
		settled, hasErr bool, code, message, action string, attempt int, scheduledFor int64) {
		st := Status{
			Workflow: workflow, Key: key, JobID: jobID, Event: event, From: from, To: to, Version: version,
			At: time.Unix(sec, nsec).In(time.FixedZone("", offset)), Settled: settled, Action: action, Attempt: attempt,
		}
		if hasErr {
			st.Error = &StatusError{Code: code, Message: message}
		}
		if scheduledFor != 0 { // 0: none
			st.ScheduledFor = time.Unix(scheduledFor, nsec).In(time.FixedZone("", offset))
		}
		checkStatus(t, st)
	})
}

// checkState checks MarshalState against encoding/json, DecodeState on what
// it writes, and the round trip.
func checkState(t *testing.T, r StateRecord) {
	t.Helper()
	want, wantErr := json.Marshal(&r)
	got, err := MarshalState(&r)
	if (err == nil) != (wantErr == nil) || string(got) != string(want) {
		t.Fatalf("MarshalState(%+v) = %s, %v; encoding/json: %s, %v", r, got, err, want, wantErr)
	}
	if err != nil {
		return
	}
	back, err := DecodeState(got)
	if err != nil {
		t.Fatalf("DecodeState(%s): %v", got, err)
	}
	checkRoundTrip(t, got, back, MarshalState, DecodeState)
}

func sampleState() StateRecord {
	return StateRecord{
		State: "awaiting_payment", Version: 12, Data: json.RawMessage(`{"items":["a<b"],"total":12.5}`),
		UpdatedAt: time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC),
		Applied:   []uint64{1, 18446744073709551615},
		Pending: []PendingWork{{ID: "k/12/charge", Action: "charge", JobID: "j", Attempt: 2,
			Since: time.Date(2026, 11, 25, 9, 59, 0, 5, time.UTC), NextAttemptAt: time.Date(2026, 11, 25, 10, 0, 4, 0, time.UTC),
			LastError: "gateway: 503 <busy>", TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			TraceState: "congo=t61rcWkgMzE"}, {ID: "k/12/mail"}},
		Entered: 11,
	}
}

func TestStateCodec(t *testing.T) {
	r := sampleState()
	checkState(t, r)
	checkState(t, StateRecord{})                               // data null, zero time, no lists
	checkState(t, StateRecord{Data: json.RawMessage{}})        // Marshal fails
	checkState(t, StateRecord{Data: json.RawMessage(`{"a":`)}) // Marshal fails
	checkState(t, StateRecord{Data: json.RawMessage(" [1, 2] ")})
	checkState(t, StateRecord{Applied: []uint64{}, Pending: []PendingWork{}})
	checkState(t, StateRecord{UpdatedAt: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}) // Marshal fails
	r.State, r.Pending[0].ID, r.Pending[1].Attempt = "a\"b\\c\n\xff\u2028<", "é", -7
	r.UpdatedAt = time.Date(2026, 11, 25, 10, 0, 0, 0, time.FixedZone("", 9*3600))
	checkState(t, r)
	checkState(t, *benchState(32))
}

func FuzzMarshalState(f *testing.F) {
	f.Add("ready", uint64(1000), []byte(`{}`), false, int64(1e9), int64(123456789), 0, uint8(32), uint64(1e6), uint8(0), "", "", "", 0, uint64(1))
	f.Add("", uint64(0), []byte(nil), true, int64(-62135596800), int64(0), 0, uint8(0), uint64(0), uint8(2), "k/1/a", "a", "j", 3, uint64(0))
	f.Add("<é\xff>", uint64(1<<64-1), []byte(` {"a" : "<"} `), false, int64(1e9), int64(1), -3600, uint8(1), uint64(1<<64-1), uint8(1), "\"", "\n", "\u2028", -1, uint64(7))
	f.Add("s", uint64(1), []byte{}, false, int64(1e9), int64(0), 0, uint8(0), uint64(0), uint8(0), "", "", "", 0, uint64(1))
	f.Add("s", uint64(1), []byte(`{}`), false, int64(253402300800), int64(0), 0, uint8(0), uint64(0), uint8(0), "", "", "", 0, uint64(1))
	f.Fuzz(func(t *testing.T, state string, version uint64, data []byte, nilData bool, sec, nsec int64, offset int,
		applied uint8, seq uint64, pendings uint8, id, action, jobID string, attempt int, entered uint64) {
		if nilData {
			data = nil
		}
		r := StateRecord{State: state, Version: version, Data: data, UpdatedAt: time.Unix(sec, nsec).In(time.FixedZone("", offset)), Entered: entered}
		if applied > 0 {
			r.Applied = []uint64{}
		}
		for i := range uint64(applied % 40) {
			r.Applied = append(r.Applied, seq+i*(seq/7+1))
		}
		if pendings > 0 {
			r.Pending = []PendingWork{}
		}
		for i := range int(pendings % 4) {
			p := PendingWork{ID: id + strconv.Itoa(i), Action: action, JobID: jobID, Attempt: attempt + i}
			if i%2 == 1 {
				p.Since, p.NextAttemptAt, p.LastError = r.UpdatedAt, r.UpdatedAt.Add(time.Duration(seq%1e9)), action
				p.TraceParent, p.TraceState = jobID, id
			}
			r.Pending = append(r.Pending, p)
		}
		checkState(t, r)
	})
}
