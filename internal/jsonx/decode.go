package jsonx

import (
	"bytes"
	"unicode/utf8"
)

// Decoder reads JSON of one expected shape: objects whose members come in a
// known order with known keys (spelled exactly), strings without escapes,
// and raw values. Anything else (an unknown, repeated, missing or misplaced
// key, an escape, a null string, a syntax error) makes it fail, and the
// caller decodes the input again with encoding/json, which handles every
// case. Its methods return zero values once it has failed; Finish reports
// whether it did.
//
// The whitespace JSON allows is accepted between tokens.
type Decoder struct {
	data   []byte
	i      int
	open   bool // just after '{': no comma before the next member
	failed bool
}

// NewDecoder returns a Decoder reading data.
func NewDecoder(data []byte) Decoder { return Decoder{data: data} }

// Finish reports whether everything read so far was of the expected shape
// and was all of the input (but whitespace).
func (d *Decoder) Finish() bool {
	return !d.failed && d.space() == len(d.data)
}

func (d *Decoder) fail() { d.failed = true }

// space skips whitespace and returns the position of the next token.
func (d *Decoder) space() int {
	d.i = skipSpace(d.data, d.i)
	return d.i
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// token consumes c, the next token.
func (d *Decoder) token(c byte) {
	if d.failed {
		return
	}
	if i := d.space(); i < len(d.data) && d.data[i] == c {
		d.i++
		return
	}
	d.fail()
}

// Open reads the '{' that begins an object.
func (d *Decoder) Open() {
	d.token('{')
	d.open = true
}

// Close reads the '}' that ends an object: there must be no more members.
func (d *Decoder) Close() {
	d.token('}')
	d.open = false
}

// keyAt returns where the next member's key begins if it is name (after
// the comma before it, if any), else -1.
func (d *Decoder) keyAt(name string) int {
	if d.failed {
		return -1
	}
	i := d.space()
	if !d.open {
		if i >= len(d.data) || d.data[i] != ',' {
			return -1
		}
		i = skipSpace(d.data, i+1)
	}
	if end := i + 1 + len(name); end < len(d.data) && d.data[i] == '"' &&
		string(d.data[i+1:end]) == name && d.data[end] == '"' {
		return i
	}
	return -1
}

// Has reports whether the next member of the object is name.
func (d *Decoder) Has(name string) bool { return d.keyAt(name) >= 0 }

// Key reads the next member's key, which must be name, and the colon after
// it; the member's value is read next. It returns d, to read the value with.
func (d *Decoder) Key(name string) *Decoder {
	i := d.keyAt(name)
	if i < 0 {
		d.fail()
		return d
	}
	d.i = i + len(name) + 2
	d.open = false
	d.token(':')
	return d
}

// text returns the contents of the next string, which must have no escapes
// and be valid UTF-8 (encoding/json would replace invalid bytes).
func (d *Decoder) text() []byte {
	if d.failed {
		return nil
	}
	i := d.space()
	if i >= len(d.data) || d.data[i] != '"' {
		d.fail()
		return nil
	}
	ascii := true
	for j := i + 1; j < len(d.data); j++ {
		class := stringByte[d.data[j]]
		if class == '.' { // most bytes; faster tested on its own than in a switch
			continue
		}
		switch class {
		case '"':
			s := d.data[i+1 : j]
			if !ascii && !utf8.Valid(s) {
				d.fail()
				return nil
			}
			d.i = j + 1
			return s
		case '\\', 'c':
			d.fail()
			return nil
		case 'u':
			ascii = false
		}
	}
	d.fail()
	return nil
}

// String reads a string.
func (d *Decoder) String() string { return string(d.text()) }

// Raw reads any JSON value, null included, and returns a copy of its bytes
// as they are in the input, as encoding/json does for a json.RawMessage.
func (d *Decoder) Raw() []byte {
	if d.failed {
		return nil
	}
	start := d.space()
	s := scanner{data: d.data}
	end := s.value(start, 0)
	if end < 0 {
		d.fail()
		return nil
	}
	d.i = end
	return bytes.Clone(d.data[start:end])
}
