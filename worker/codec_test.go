package worker

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

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsonx"
)

// The hand-written codecs against encoding/json: same bytes out, same values
// and errors in (envelopes: encoding/json made strict about names).

// strictRef is the reference of unmarshalEnvelope: json.Unmarshal, and then
// encoding/json's own tokens must show an object whose names are "event"
// and "data" exactly, each at most once.
func strictRef(data []byte) (contract.Envelope, error) {
	var env contract.Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return contract.Envelope{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return contract.Envelope{}, errors.New("not an object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return contract.Envelope{}, err
		}
		name := tok.(string)
		if name != "event" && name != "data" || seen[name] {
			return contract.Envelope{}, fmt.Errorf("field %q", name)
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return contract.Envelope{}, err
		}
	}
	return env, nil
}

func checkUnmarshalEnvelope(t *testing.T, data []byte) {
	t.Helper()
	want, wantErr := strictRef(data)
	var got contract.Envelope
	err := unmarshalEnvelope(data, &got)
	if (err == nil) != (wantErr == nil) || !reflect.DeepEqual(got, want) {
		t.Fatalf("unmarshalEnvelope(%q) = %#v, %v; strict encoding/json: %#v, %v", data, got, err, want, wantErr)
	}
	// The fast path takes only what the general one takes, with its result.
	if fast, ok := decodeEnvelope(data); ok {
		var slow contract.Envelope
		if err := strictEnvelope(data, &slow); err != nil || !reflect.DeepEqual(fast, slow) {
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

// Each body strictEnvelope refuses, and why.
func TestStrictEnvelope(t *testing.T) {
	for in, want := range map[string]error{
		`{"Event":"start_processing"}`:                           jsonx.ErrUnknownField,
		`{"event":"confirm_payment","event":"start_processing"}`: jsonx.ErrDuplicateField,
		`{"event":"ping","data":1,"data":2}`:                     jsonx.ErrDuplicateField,
		`{"event":"ping","extra":1}`:                             jsonx.ErrUnknownField,
		`{"event":"ping","Data":{}}`:                             jsonx.ErrUnknownField,
		`null`:                                                   jsonx.ErrNotObject,
	} {
		var env contract.Envelope
		if err := unmarshalEnvelope([]byte(in), &env); !errors.Is(err, want) || env.Event != "" {
			t.Errorf("unmarshalEnvelope(%s) = %+v, %v; want %v", in, env, err, want)
		}
	}
	for _, in := range []string{`{"data":{},"event":"ping"}`, `{"ev\u0065nt":"ping"}`, ` {"event" : "ping"} `} {
		var env contract.Envelope
		if err := unmarshalEnvelope([]byte(in), &env); err != nil || env.Event != "ping" {
			t.Errorf("unmarshalEnvelope(%s) = %+v, %v", in, env, err)
		}
	}
}

func TestUnmarshalEnvelope(t *testing.T) {
	for i, in := range envelopeInputs {
		checkUnmarshalEnvelope(t, []byte(in))
		if _, ok := decodeEnvelope([]byte(in)); !ok && i < 8 {
			t.Errorf("decodeEnvelope left %s to encoding/json", in)
		}
	}
	// Like encoding/json, the data is a copy, not a part of the message.
	in := []byte(`{"event":"ping","data":{}}`)
	var env contract.Envelope
	if err := unmarshalEnvelope(in, &env); err != nil {
		t.Fatal(err)
	}
	in[len(in)-3] = '['
	if string(env.Data) != "{}" {
		t.Errorf("data %s changed with the message", env.Data)
	}
}

func FuzzUnmarshalEnvelope(f *testing.F) {
	for _, in := range envelopeInputs {
		f.Add([]byte(in))
	}
	f.Fuzz(checkUnmarshalEnvelope)
}

func sampleRecord() contract.StateRecord {
	return contract.StateRecord{
		State: "awaiting_payment", Version: 12, Data: json.RawMessage(`{"items":["a<b"],"total":12.5}`),
		UpdatedAt: time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC),
		Applied:   []uint64{1, 18446744073709551615},
		Pending: []contract.PendingWork{{ID: "k/12/charge", Action: "charge", JobID: "j", Attempt: 2,
			Since: time.Date(2026, 11, 25, 9, 59, 0, 5, time.UTC), NextAttemptAt: time.Date(2026, 11, 25, 10, 0, 4, 0, time.UTC),
			LastError: "gateway: 503 <busy>"}, {ID: "k/12/mail"}},
		Entered: 11,
	}
}

// checkRecord checks marshalRecord against encoding/json, and that what it
// writes decodes back as encoding/json decodes it, without encoding/json
// when nothing needed escaping.
func checkRecord(t *testing.T, r contract.StateRecord) {
	t.Helper()
	want, wantErr := json.Marshal(&r)
	got, err := marshalRecord(&r)
	if (err == nil) != (wantErr == nil) || string(got) != string(want) {
		t.Fatalf("marshalRecord(%+v) = %s, %v; encoding/json: %s, %v", r, got, err, want, wantErr)
	}
	if err != nil {
		return
	}
	checkUnmarshalRecord(t, got)
	deep := bytes.Count(got, []byte("[")) > 500
	if _, ok := decodeRecord(got); !ok && !bytes.Contains(got, []byte(`\`)) && !deep {
		t.Errorf("decodeRecord left %s to encoding/json", got)
	}
}

func TestRecordCodec(t *testing.T) {
	r := sampleRecord()
	checkRecord(t, r)
	checkRecord(t, contract.StateRecord{})                               // data null, zero time, no lists
	checkRecord(t, contract.StateRecord{Data: json.RawMessage{}})        // Marshal fails
	checkRecord(t, contract.StateRecord{Data: json.RawMessage(`{"a":`)}) // Marshal fails
	checkRecord(t, contract.StateRecord{Data: json.RawMessage(" [1, 2] ")})
	checkRecord(t, contract.StateRecord{Applied: []uint64{}, Pending: []contract.PendingWork{}})
	checkRecord(t, contract.StateRecord{UpdatedAt: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}) // Marshal fails
	r.State, r.Pending[0].ID, r.Pending[1].Attempt = "a\"b\\c\n\xff\u2028<", "é", -7
	r.UpdatedAt = time.Date(2026, 11, 25, 10, 0, 0, 0, time.FixedZone("", 9*3600))
	checkRecord(t, r)
	r = hotRecord(maxApplied)
	checkRecord(t, r)
}

func FuzzMarshalRecord(f *testing.F) {
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
		r := contract.StateRecord{State: state, Version: version, Data: data, UpdatedAt: time.Unix(sec, nsec).In(time.FixedZone("", offset)), Entered: entered}
		if applied > 0 {
			r.Applied = []uint64{}
		}
		for i := range uint64(applied % 40) {
			r.Applied = append(r.Applied, seq+i*(seq/7+1))
		}
		if pendings > 0 {
			r.Pending = []contract.PendingWork{}
		}
		for i := range int(pendings % 4) {
			p := contract.PendingWork{ID: id + strconv.Itoa(i), Action: action, JobID: jobID, Attempt: attempt + i}
			if i%2 == 1 {
				p.Since, p.NextAttemptAt, p.LastError = r.UpdatedAt, r.UpdatedAt.Add(time.Duration(seq%1e9)), action
			}
			r.Pending = append(r.Pending, p)
		}
		checkRecord(t, r)
	})
}

func checkUnmarshalRecord(t *testing.T, data []byte) {
	t.Helper()
	var want, got contract.StateRecord
	wantErr := json.Unmarshal(data, &want)
	err := unmarshalRecord(data, &got)
	if (err == nil) != (wantErr == nil) || !reflect.DeepEqual(got, want) {
		t.Fatalf("unmarshalRecord(%s) = %#v, %v; encoding/json: %#v, %v", data, got, err, want, wantErr)
	}
}

// recordInputs are records decodeRecord takes (the first five) and others it
// must leave to encoding/json.
var recordInputs = []string{
	`{"state":"ready","version":1000,"data":{},"updated_at":"2026-11-25T10:00:00.123456789Z","applied":[1000000,1000001],"entered":1}`,
	`{"state":"","version":0,"data":null,"updated_at":"0001-01-01T00:00:00Z","entered":0}`,
	`{"state":"s","version":1,"data":[1,"a"],"updated_at":"2026-11-25T10:00:00+09:00","applied":[],"pending":[],"entered":1}`,
	`{"state":"s","version":2,"data":{},"updated_at":"2026-11-25T10:00:00Z","pending":[{"id":"k/2/a","action":"a","job_id":"j","attempt":3,"since":"2026-11-25T09:00:00.5Z","next_attempt_at":"2026-11-25T10:00:04Z","last_error":"503"},{"id":"k/2/b","action":"b","job_id":"j","attempt":1,"since":"2026-11-25T09:00:00Z"}],"entered":1}`,
	`{ "state" : "s" , "version" : 1 , "data" : { "a" : 1 } , "updated_at" : "2026-11-25T10:00:00Z" , "pending" : [ { "id" : "k/1/a" , "action" : "a" , "job_id" : "j" , "attempt" : 0 } , {"id":"","action":"","job_id":"","attempt":-1} ] , "entered" : 1 }`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","applied":null,"entered":1}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","applied":[1,-2],"entered":1}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","applied":[1,2.0],"entered":1}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","applied":[1,],"entered":1}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","applied":[1 2],"entered":1}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","pending":[{"id":"a","action":"b","job_id":"c"}],"entered":1}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","pending":[{"id":"a","action":"b","job_id":"c","attempt":1,"x":1}],"entered":1}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","pending":[null],"entered":1}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","pending":[{"id":"a","action":"b","job_id":"c","attempt":2,"last_error":"x","since":"2026-11-25T10:00:00Z"}],"entered":1}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","pending":[{"id":"a","action":"b","job_id":"c","attempt":2,"since":"2026-11-25T10:00:00"}],"entered":1}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","entered":1,"future_field":true}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z"}`,
	`{"state":"ready","version":1,"data":{},"entered":1}`,
	`{"version":1,"state":"ready","data":{},"updated_at":"2026-11-25T10:00:00Z","entered":1}`,
	`{"state":"re\"ady","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","entered":1}`,
	`{"state":"ready","version":1,"data":,"updated_at":"2026-11-25T10:00:00Z","entered":1}`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","entered":1}]`,
	`{"state":"ready","version":1,"data":{},"updated_at":"2026-11-25T10:00:00Z","entered":18446744073709551616}`,
	`{}`, `null`, ``,
}

func TestUnmarshalRecord(t *testing.T) {
	for i, in := range recordInputs {
		checkUnmarshalRecord(t, []byte(in))
		if _, ok := decodeRecord([]byte(in)); !ok && i < 5 {
			t.Errorf("decodeRecord left %s to encoding/json", in)
		}
	}
}

func FuzzUnmarshalRecord(f *testing.F) {
	for _, in := range recordInputs {
		f.Add([]byte(in))
	}
	f.Fuzz(checkUnmarshalRecord)
}
