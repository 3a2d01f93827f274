package queue

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
)

// The hand-written codecs against encoding/json: same bytes out, same values
// and errors in.

func checkMarshalEnvelope(t *testing.T, ev contract.Envelope) {
	t.Helper()
	want, wantErr := json.Marshal(ev)
	got, err := marshalEnvelope(&ev)
	if (err == nil) != (wantErr == nil) || string(got) != string(want) {
		t.Errorf("marshalEnvelope(%q, %q) = %s, %v; encoding/json: %s, %v", ev.Event, ev.Data, got, err, want, wantErr)
	}
}

func TestMarshalEnvelope(t *testing.T) {
	for _, ev := range []contract.Envelope{
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
		checkMarshalEnvelope(t, contract.Envelope{Event: event, Data: data})
	})
}

func typicalStatus() contract.Status {
	return contract.Status{
		Workflow: "order", Key: "order-12345", JobID: "Pq3x5Wd8e9CB1V2nFzHkLm", Event: "start_processing",
		From: "idle", To: "processing", Version: 7, At: time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC),
		Settled: true,
	}
}

// checkStatus checks marshalStatus against encoding/json, and that what it
// writes decodes back as encoding/json decodes it, without encoding/json
// when nothing needed escaping.
func checkStatus(t *testing.T, st contract.Status) {
	t.Helper()
	want, wantErr := json.Marshal(&st)
	got, err := marshalStatus(&st)
	if (err == nil) != (wantErr == nil) || string(got) != string(want) {
		t.Fatalf("marshalStatus(%+v) = %s, %v; encoding/json: %s, %v", st, got, err, want, wantErr)
	}
	if err != nil {
		return
	}
	checkUnmarshalStatus(t, got)
	if _, ok := decodeStatus(got); !ok && !strings.Contains(string(got), `\`) {
		t.Errorf("decodeStatus left %s to encoding/json", got)
	}
}

func TestStatusCodec(t *testing.T) {
	st := typicalStatus()
	checkStatus(t, st)
	st.Error = &contract.StatusError{Code: "invalid_transition", Message: `"ship" is not allowed in state "idle"`}
	st.Action, st.Attempt = "charge", 3
	checkStatus(t, st)
	st.Error, st.Attempt = &contract.StatusError{}, -1
	checkStatus(t, st)
	st.At = time.Date(2026, 11, 25, 10, 0, 0, 0, time.FixedZone("", -5*3600))
	checkStatus(t, st)
	st.At = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) // Marshal fails
	checkStatus(t, st)
	checkStatus(t, contract.Status{Workflow: "<é>", Key: "\u2028", Event: "\xff", Version: 1<<64 - 1, Attempt: -1 << 63})
}

func FuzzMarshalStatus(f *testing.F) {
	f.Add("order", "order-12345", "job", "start", "idle", "processing", uint64(7), int64(1e9), int64(123456789), 0, true, false, "", "", "", 0)
	f.Add("", "", "", "", "", "", uint64(0), int64(-62135596800), int64(0), 0, false, true, "", "", "", 0)
	f.Add("<&>", "\u2028", "\xff", "\"\\", "\n\t\x01", "é", uint64(1<<64-1), int64(1e9), int64(1), 3600, false, true,
		contract.CodeGuardRefused, "no \"way\"", "charge", -1)
	f.Add("w", "k", "j", "e", "f", "t", uint64(1), int64(253402300800), int64(0), 0, true, false, "", "", "", 1) // year 10000
	f.Add("w", "k", "j", "e", "f", "t", uint64(1), int64(1e9), int64(0), 86400, true, false, "", "", "", 1)      // 24h offset
	f.Fuzz(func(t *testing.T, workflow, key, jobID, event, from, to string, version uint64, sec, nsec int64, offset int,
		settled, hasErr bool, code, message, action string, attempt int) {
		st := contract.Status{
			Workflow: workflow, Key: key, JobID: jobID, Event: event, From: from, To: to, Version: version,
			At: time.Unix(sec, nsec).In(time.FixedZone("", offset)), Settled: settled, Action: action, Attempt: attempt,
		}
		if hasErr {
			st.Error = &contract.StatusError{Code: code, Message: message}
		}
		checkStatus(t, st)
	})
}

func checkUnmarshalStatus(t *testing.T, data []byte) {
	t.Helper()
	var want, got contract.Status
	wantErr := json.Unmarshal(data, &want)
	err := unmarshalStatus(data, &got)
	if (err == nil) != (wantErr == nil) || !reflect.DeepEqual(got, want) {
		t.Fatalf("unmarshalStatus(%s) = %+v, %v; encoding/json: %+v, %v", data, got, err, want, wantErr)
	}
}

// statusInputs are statuses as marshalStatus writes them and near misses
// that must go to encoding/json.
var statusInputs = []string{
	`{"workflow":"order","key":"order-12345","job_id":"j","event":"start","from":"idle","to":"processing","version":7,"at":"2026-11-25T10:00:00.123456789Z","settled":true}`,
	`{"workflow":"w","key":"k","job_id":"j","event":"e","from":"a","to":"a","version":0,"at":"2026-11-25T10:00:00-05:00","settled":false,"error":{"code":"c","message":"m"},"action":"x","attempt":-2}`,
	`{ "workflow" : "w", "key": "k", "job_id": "j", "event": "e", "from": "a", "to": "b", "version": 1, "at": "2026-11-25T10:00:00Z", "settled": true, "error": {"code": "", "message": ""} }`,
	`{"workflow":"w","key":"k","job_id":"j","event":"e","from":"a","to":"b","version":1,"at":"2026-11-25T10:00:00Z","settled":true,"error":null}`,
	`{"workflow":"w","key":"k","job_id":"j","event":"e","from":"a","to":"b","version":1,"at":"2026-11-25T10:00:00Z","settled":true,"attempt":1.5}`,
	`{"workflow":"w","key":"k","job_id":"j","event":"e","from":"a","to":"b","version":1,"at":"2026-11-25T10:00:00Z","settled":true,"extra":1}`,
	`{"Workflow":"w","key":"k","job_id":"j","event":"e","from":"a","to":"b","version":1,"at":"2026-11-25T10:00:00Z","settled":true}`,
	`{"workflow":"w","workflow":"x","key":"k","job_id":"j","event":"e","from":"a","to":"b","version":1,"at":"2026-11-25T10:00:00Z","settled":true}`,
	`{"key":"k","workflow":"w","job_id":"j","event":"e","from":"a","to":"b","version":1,"at":"2026-11-25T10:00:00Z","settled":true}`,
	`{"workflow":"w\u0041","key":"k","job_id":"j","event":"e","from":"a","to":"b","version":1,"at":"2026-11-25T10:00:00Z","settled":true}`,
	`{"workflow":"w","key":"k","job_id":"j","event":"e","from":"a","to":"b","version":-1,"at":"2026-11-25T10:00:00Z","settled":true}`,
	`{"workflow":"w","key":"k","job_id":"j","event":"e","from":"a","to":"b","version":1,"at":"yesterday","settled":true}`,
	`{"workflow":"w","key":"k","job_id":"j","event":"e","from":"a","to":"b","version":1,"at":"2026-11-25T10:00:00Z","settled":true}}`,
	`{"workflow":"w"}`, `{}`, `null`, `[]`, ``, `{"workflow":1}`,
}

func TestUnmarshalStatus(t *testing.T) {
	for i, in := range statusInputs {
		checkUnmarshalStatus(t, []byte(in))
		if _, ok := decodeStatus([]byte(in)); !ok && i < 3 {
			t.Errorf("decodeStatus left %s to encoding/json", in)
		}
	}
}

func FuzzUnmarshalStatus(f *testing.F) {
	for _, in := range statusInputs {
		f.Add([]byte(in))
	}
	f.Fuzz(checkUnmarshalStatus)
}
