package worker

import (
	"encoding/json"
	"strconv"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsonx"
)

// The JSON of event envelopes (read once per event) and of the state record
// (written once per commit, read once per activation): by hand, because
// encoding/json's reflection was a sixth of the pipeline's CPU. The output is
// byte for byte encoding/json's, and anything the fast paths do not take (see
// jsonx) goes to encoding/json, so the results are the same (envelopes are
// decoded strictly on both paths); the fuzz tests check it.

// unmarshalEnvelope is json.Unmarshal(data, env) for a zero env, made
// strict: the body must be an object whose member names are "event" and
// "data" exactly, each at most once (data optional). encoding/json alone
// would take {"Event":...} (it matches names case-insensitively), let the
// last of two "event" members win, and ignore unknown members: a producer's
// mistake would be applied as some other event instead of reported.
func unmarshalEnvelope(data []byte, env *contract.Envelope) error {
	if r, ok := decodeEnvelope(data); ok {
		*env = r
		return nil
	}
	return strictEnvelope(data, env)
}

// malformed says what is wrong with an event body that unmarshalEnvelope
// refused with err (nil: the event name is empty).
func malformed(err error) string {
	const want = `event is not {"event": "...", "data": ...} JSON`
	if err == nil {
		return want + ": the event name is empty"
	}
	return want + ": " + err.Error()
}

// strictEnvelope is unmarshalEnvelope for what decodeEnvelope does not take:
// encoding/json decodes the values, CheckFields checks the names.
func strictEnvelope(data []byte, env *contract.Envelope) error {
	var e contract.Envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return err
	}
	if err := jsonx.CheckFields(data, "event", "data"); err != nil {
		return err
	}
	*env = e
	return nil
}

// decodeEnvelope decodes {"event":"...","data":...} with data optional, the
// names spelled exactly, in that order; ok is false for anything else, which
// includes every body strictEnvelope refuses.
func decodeEnvelope(data []byte) (_ contract.Envelope, ok bool) {
	d := jsonx.NewDecoder(data)
	d.Open()
	env := contract.Envelope{Event: d.Key("event").String()}
	if d.Has("data") {
		env.Data = d.Key("data").Raw()
	}
	d.Close()
	return env, d.Finish()
}

// marshalRecord is json.Marshal(r).
func marshalRecord(r *contract.StateRecord) ([]byte, error) {
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
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, `,"entered":`...)
	b = strconv.AppendUint(b, r.Entered, 10)
	return append(b, '}'), nil
}

// unmarshalRecord is json.Unmarshal(data, r) for a zero r.
func unmarshalRecord(data []byte, r *contract.StateRecord) error {
	return jsonx.Unmarshal(data, r, decodeRecord)
}

// decodeRecord decodes a record as marshalRecord writes it (whitespace
// aside); ok is false for anything else.
func decodeRecord(data []byte) (_ contract.StateRecord, ok bool) {
	d := jsonx.NewDecoder(data)
	d.Open()
	// Go calls the methods in the literal in order, left to right.
	r := contract.StateRecord{
		State:     d.Key("state").String(),
		Version:   d.Key("version").Uint(),
		Data:      d.Key("data").Raw(),
		UpdatedAt: d.Key("updated_at").Time(),
	}
	if d.Has("applied") {
		r.Applied = d.Key("applied").Uints()
	}
	if d.Has("pending") {
		d.Key("pending").Array()
		r.Pending = []contract.PendingWork{} // [] is an empty slice, not nil, as in encoding/json
		for d.More() {
			d.Open()
			p := contract.PendingWork{
				ID:      d.Key("id").String(),
				Action:  d.Key("action").String(),
				JobID:   d.Key("job_id").String(),
				Attempt: d.Key("attempt").Int(),
			}
			if d.Has("since") {
				p.Since = d.Key("since").Time()
			}
			if d.Has("next_attempt_at") {
				p.NextAttemptAt = d.Key("next_attempt_at").Time()
			}
			if d.Has("last_error") {
				p.LastError = d.Key("last_error").String()
			}
			r.Pending = append(r.Pending, p)
			d.Close()
		}
	}
	r.Entered = d.Key("entered").Uint()
	d.Close()
	return r, d.Finish()
}
