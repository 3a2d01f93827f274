package queue

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestParsePubAck(t *testing.T) {
	for _, tc := range []struct {
		in       string
		seq      uint64
		conflict bool // an APIError with the wrong-last-sequence code
		invalid  bool // ErrInvalidJSAck
	}{
		{in: `{"stream":"KV_orderly_state_order","seq":42}`, seq: 42},
		{in: `{"stream":"KV_orderly_state_error","domain":"hub","seq":7,"duplicate":true}`, seq: 7},
		{in: `{"stream":"S","seq":18446744073709551615}`, seq: 18446744073709551615},
		{in: `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"S","seq":0}`, conflict: true},
		{in: `{"stream":"S","seq":0}`, invalid: true},
		{in: `{"stream":"S"}`, invalid: true},
		{in: `not json`, invalid: true},
		{in: ``, invalid: true},
	} {
		seq, err := parsePubAck([]byte(tc.in))
		var apiErr *jetstream.APIError
		switch {
		case tc.conflict:
			if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
				t.Errorf("%s: got %d, %v; want the wrong-last-sequence APIError", tc.in, seq, err)
			}
		case tc.invalid:
			if !errors.Is(err, jetstream.ErrInvalidJSAck) {
				t.Errorf("%s: got %d, %v; want ErrInvalidJSAck", tc.in, seq, err)
			}
		case err != nil || seq != tc.seq:
			t.Errorf("%s: got %d, %v; want %d", tc.in, seq, err, tc.seq)
		}
	}
}
