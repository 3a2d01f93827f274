package queue

import (
	"encoding/json"
	"strconv"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsonx"
)

// The JSON of envelopes and statuses, written and read once per event: by
// hand, because encoding/json's reflection was a sixth of the pipeline's
// CPU. The output is byte for byte encoding/json's, and anything the fast
// paths do not take (see jsonx) goes to encoding/json, so the results are
// the same; the fuzz tests check it.

// marshalEnvelope is json.Marshal(ev).
func marshalEnvelope(ev *contract.Envelope) ([]byte, error) {
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

// marshalStatus is json.Marshal(st).
func marshalStatus(st *contract.Status) ([]byte, error) {
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
	return append(b, '}'), nil
}

// unmarshalStatus is json.Unmarshal(data, st) for a zero st.
func unmarshalStatus(data []byte, st *contract.Status) error {
	return jsonx.Unmarshal(data, st, decodeStatus)
}

// decodeStatus decodes a status as marshalStatus writes it (whitespace
// aside); ok is false for anything else.
func decodeStatus(data []byte) (_ contract.Status, ok bool) {
	d := jsonx.NewDecoder(data)
	d.ShareStrings() // a status is short-lived: one allocation for its six strings and more
	d.Open()
	// Go calls the methods in the literal in order, left to right.
	st := contract.Status{
		Workflow: d.Key("workflow").String(),
		Key:      d.Key("key").String(),
		JobID:    d.Key("job_id").String(),
		Event:    d.Key("event").String(),
		From:     d.Key("from").String(),
		To:       d.Key("to").String(),
		Version:  d.Key("version").Uint(),
		At:       d.Key("at").Time(),
		Settled:  d.Key("settled").Bool(),
	}
	if d.Has("error") {
		d.Key("error").Open()
		st.Error = &contract.StatusError{Code: d.Key("code").String(), Message: d.Key("message").String()}
		d.Close()
	}
	if d.Has("action") {
		st.Action = d.Key("action").String()
	}
	if d.Has("attempt") {
		st.Attempt = d.Key("attempt").Int()
	}
	d.Close()
	return st, d.Finish()
}
