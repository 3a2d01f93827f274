// Package jsonx holds the primitives of the hand-written JSON codecs of the
// per-event hot path: contract's encoders and its event envelope decoder,
// and queue's job records. contract/codec.go says which paths are by hand
// and why.
//
// Every function here either produces exactly what encoding/json would, or
// reports that it cannot (ok == false), so that the caller falls back to
// encoding/json for that value: the codecs built on it are faster, never
// different. The fuzz tests compare each against encoding/json. CheckFields
// is the exception: a check of member names that encoding/json lacks.
package jsonx

import (
	"time"
	"unicode/utf8"
)

const hex = "0123456789abcdef"

// AppendString appends s as a JSON string exactly as encoding/json.Marshal
// writes it: HTML-escaped (<, >, & as \u003c, \u003e, \u0026), invalid UTF-8
// as \ufffd, U+2028 and U+2029 escaped.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		class := stringByte[c]
		if class == '.' { // most bytes; faster tested on its own than in a switch
			i++
			continue
		}
		if class == 'u' {
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				b = append(b, s[start:i]...)
				b = append(b, `\ufffd`...)
			case r == '\u2028' || r == '\u2029':
				b = append(b, s[start:i]...)
				b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			default:
				i += size
				continue
			}
			i += size
			start = i
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default: // other control bytes and <, >, &
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendTime appends t as time.Time.MarshalJSON writes it (RFC 3339 with
// nanoseconds, quoted). ok is false, and b is returned unchanged, when
// MarshalJSON would fail: a year outside [0,9999] or a zone offset RFC 3339
// cannot express.
func AppendTime(b []byte, t time.Time) (_ []byte, ok bool) {
	// AppendText formats and checks exactly as MarshalJSON does, without
	// allocating.
	out, err := t.AppendText(append(b, '"'))
	if err != nil {
		return b, false
	}
	return append(out, '"'), true
}

// AppendRaw appends raw as encoding/json.Marshal writes a json.RawMessage: a
// nil raw as null, anything else as it is, provided that is what Marshal
// would write. ok is false, and b is returned unchanged, when raw is not
// valid JSON (Marshal fails) or when Marshal would rewrite it (it compacts
// whitespace and escapes <, >, &, U+2028 and U+2029).
func AppendRaw(b, raw []byte) (_ []byte, ok bool) {
	if raw == nil {
		return append(b, "null"...), true
	}
	s := scanner{data: raw}
	if !s.valid() || s.rewrite {
		return b, false
	}
	return append(b, raw...), true
}
