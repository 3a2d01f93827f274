package jsonx

import (
	"bytes"
	"math"
	"time"
	"unicode/utf8"
)

// Decoder reads JSON of one expected shape: objects whose members come in a
// known order with known keys (spelled exactly), strings without escapes,
// integers, booleans, times and raw values. Anything else (an unknown,
// repeated, missing or misplaced key, an escape, a null, a number that is not
// a plain integer, a syntax error) makes it fail, and the caller decodes the
// input again with encoding/json, which handles every case. Its methods
// return zero values once it has failed; Finish reports whether it did.
//
// The whitespace JSON allows is accepted between tokens.
type Decoder struct {
	data   []byte
	src    string // data as a string, for String to share (ShareStrings)
	i      int
	open   bool // just after '{' or '[': no comma before the next member or element
	failed bool
}

// NewDecoder returns a Decoder reading data.
func NewDecoder(data []byte) Decoder { return Decoder{data: data} }

// ShareStrings makes String return parts of one copy of the whole input
// instead of a copy each: one allocation for all the strings read, which
// keep the whole input in memory for as long as any of them is. It suits
// short-lived values with several strings.
func (d *Decoder) ShareStrings() { d.src = string(d.data) }

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

// Array reads the '[' that begins an array; More then walks its elements.
func (d *Decoder) Array() {
	d.token('[')
	d.open = true
}

// More reports whether the array has another element, to be read next;
// at the array's end it reads the ']' and reports false.
func (d *Decoder) More() bool {
	if d.failed {
		return false
	}
	i := d.space()
	switch {
	case i < len(d.data) && d.data[i] == ']':
		d.i++
		d.open = false
		return false
	case d.open:
		d.open = false
		return true
	}
	d.token(',')
	return !d.failed
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
func (d *Decoder) String() string {
	s := d.text()
	if d.failed || d.src == "" {
		return string(s)
	}
	end := d.i - len(`"`)
	return d.src[end-len(s) : end]
}

// Time reads a time as time.Time.UnmarshalJSON does.
func (d *Decoder) Time() time.Time {
	start := d.space()
	d.text()
	var t time.Time
	if d.failed || t.UnmarshalJSON(d.data[start:d.i]) != nil {
		d.fail()
		return time.Time{}
	}
	return t
}

// integer reads a plain integer: no fraction or exponent (encoding/json
// would not put those into an integer field), a minus sign only if signed,
// and a magnitude that fits a uint64.
func (d *Decoder) integer(signed bool) (n uint64, neg bool) {
	if d.failed {
		return 0, false
	}
	i := d.space()
	if signed && i < len(d.data) && d.data[i] == '-' {
		neg = true
		i++
	}
	end := digits(d.data, i)
	const maxUint64 = "18446744073709551615"
	switch {
	case end == i, d.data[i] == '0' && end-i > 1,
		end-i > len(maxUint64), end-i == len(maxUint64) && string(d.data[i:end]) > maxUint64,
		end < len(d.data) && (d.data[end] == '.' || d.data[end] == 'e' || d.data[end] == 'E'):
		d.fail()
		return 0, false
	}
	for _, c := range d.data[i:end] {
		n = n*10 + uint64(c-'0')
	}
	d.i = end
	return n, neg
}

// Uint reads an unsigned integer.
func (d *Decoder) Uint() uint64 {
	n, _ := d.integer(false)
	return n
}

// Int reads an integer that fits an int.
func (d *Decoder) Int() int {
	n, neg := d.integer(true)
	if n > math.MaxInt64 && !(neg && n == -math.MinInt64) {
		d.fail()
		return 0
	}
	v := int64(n)
	if neg {
		v = -v // math.MinInt64 stays itself, as it should
	}
	if int64(int(v)) != v {
		d.fail()
		return 0
	}
	return int(v)
}

// Bool reads true or false.
func (d *Decoder) Bool() bool {
	switch {
	case d.literal("true"):
		return true
	case d.literal("false"):
		return false
	}
	d.fail()
	return false
}

// literal consumes lit if it comes next.
func (d *Decoder) literal(lit string) bool {
	if d.failed {
		return false
	}
	i := d.space()
	if len(d.data)-i < len(lit) || string(d.data[i:i+len(lit)]) != lit {
		return false
	}
	d.i += len(lit)
	return true
}

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

// Uints reads an array of unsigned integers into a slice of just the right
// size (an empty array gives an empty slice, not nil, as in encoding/json).
func (d *Decoder) Uints() []uint64 {
	d.Array()
	if d.failed {
		return nil
	}
	// The elements are numbers: counting the commas before the ']' counts them.
	n := bytes.IndexByte(d.data[d.i:], ']')
	if n < 0 {
		d.fail()
		return nil
	}
	out := make([]uint64, 0, bytes.Count(d.data[d.i:d.i+n], []byte(","))+1)
	for d.More() {
		out = append(out, d.Uint())
	}
	if d.failed {
		return nil
	}
	return out
}
