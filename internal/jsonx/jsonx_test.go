package jsonx

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Strings that exercise every branch of the escaping.
var trickyStrings = []string{
	"", "plain", `quote " backslash \ slash /`, "<script>&amp;</script>",
	"\x00\x01\x1f\x7f", "\b\f\n\r\t", "é ü 日本 🎉", "\u2028\u2029", "\xe2\x80", "\xe2\x80\xa8x",
	"bad \xff utf8 \xc3", "\xed\xa0\x80 (surrogate)", "\xf4\x90\x80\x80 (past U+10FFFF)", "end\xe2",
}

func TestAppendString(t *testing.T) {
	for _, s := range trickyStrings {
		checkString(t, s)
	}
}

func checkString(t *testing.T, s string) {
	t.Helper()
	want, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := AppendString([]byte("x"), s); string(got) != "x"+string(want) {
		t.Errorf("AppendString(%q) = %s, want %s", s, got[1:], want)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range trickyStrings {
		f.Add(s)
	}
	f.Fuzz(checkString)
}

func TestAppendTime(t *testing.T) {
	east := time.FixedZone("", 5*3600+30*60)
	for _, tm := range []time.Time{
		{},
		time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC),
		time.Date(2026, 11, 25, 10, 0, 0, 120000000, east),
		time.Date(2026, 11, 25, 10, 0, 0, 0, time.FixedZone("", -(23*3600+59*60))),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),                   // year too large: Marshal fails
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),                      // year negative: Marshal fails
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)), // offset of 24h: Marshal fails
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600+1)),  // offset with seconds: Marshal fails
		time.Now(), // with a monotonic reading
	} {
		checkTime(t, tm)
	}
}

func checkTime(t *testing.T, tm time.Time) {
	t.Helper()
	want, err := json.Marshal(tm)
	got, ok := AppendTime([]byte("x"), tm)
	switch {
	case ok != (err == nil):
		t.Errorf("AppendTime(%v): ok %v, Marshal's error %v", tm, ok, err)
	case !ok && string(got) != "x":
		t.Errorf("AppendTime(%v) failed but appended: %q", tm, got)
	case ok && string(got) != "x"+string(want):
		t.Errorf("AppendTime(%v) = %s, want %s", tm, got[1:], want)
	}
}

func FuzzAppendTime(f *testing.F) {
	f.Add(int64(0), int64(0), 0)
	f.Add(time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC).Unix(), int64(123456789), 0)
	f.Add(int64(253402300799), int64(999999999), 0) // 9999-12-31T23:59:59
	f.Add(int64(253402300800), int64(0), 0)         // year 10000
	f.Add(int64(-62135596801), int64(0), 0)         // year 0 minus a second
	f.Add(int64(1e9), int64(5e8), 86400)
	f.Add(int64(1e9), int64(0), -3601)
	f.Fuzz(func(t *testing.T, sec, nsec int64, offset int) {
		checkTime(t, time.Unix(sec, nsec).In(time.FixedZone("", offset)))
		checkTime(t, time.Unix(sec, nsec).UTC())
	})
}

// Raw values: valid and canonical, valid but rewritten by Marshal, invalid.
var trickyRaw = []string{
	`{}`, `[]`, `null`, `true`, `false`, `0`, `-0`, `1.5e-3`, `-12E+4`, `"s"`, `{"a":[1,{"b":null}],"c":"d"}`,
	`{"p":"xxxxxxxx"}`, `"é\u00e9\ud83c\udf89 \"\\\/\b\f\n\r\t"`, `"\xff\xfe"`,
	` {}`, `{} `, `{"a": 1}`, "[1,\n2]", `"<>&"`, "\"\u2028\"", `"\u2028"`,
	``, ` `, `{`, `}`, `[1,]`, `{"a":1,}`, `{"a"}`, `{a:1}`, `01`, `1.`, `.5`, `1e`, `-`, `+1`, `tru`, `nul`,
	`"\x01"`, `"\u12"`, `"\x"`, `"unterminated`, `1 2`, `{"a":1}{}`, `[` + strings.Repeat(`[`, 600) + strings.Repeat(`]`, 601),
}

func TestValid(t *testing.T) {
	for _, s := range trickyRaw {
		checkValid(t, []byte(s))
	}
}

func checkValid(t *testing.T, data []byte) {
	t.Helper()
	got, want := Valid(data), json.Valid(data)
	if got && !want || !got && want && !tooDeep(data) {
		t.Errorf("Valid(%q) = %v, encoding/json says %v", data, got, want)
	}
}

// tooDeep reports whether data nests more than maxDepth: Valid may then say
// false where encoding/json says true.
func tooDeep(data []byte) bool {
	return bytes.Count(data, []byte("["))+bytes.Count(data, []byte("{")) > maxDepth
}

func FuzzValid(f *testing.F) {
	for _, s := range trickyRaw {
		f.Add([]byte(s))
	}
	f.Fuzz(checkValid)
}

func TestAppendRaw(t *testing.T) {
	for _, s := range trickyRaw {
		checkRaw(t, []byte(s))
	}
	checkRaw(t, nil)
	if got, _ := AppendRaw(nil, nil); string(got) != "null" {
		t.Errorf("AppendRaw(nil) = %q, want null", got)
	}
	if _, ok := AppendRaw(nil, []byte(`{"p":"xxxxxxxx"}`)); !ok {
		t.Error("AppendRaw refused a compact value")
	}
}

func checkRaw(t *testing.T, raw []byte) {
	t.Helper()
	want, err := json.Marshal(json.RawMessage(raw))
	got, ok := AppendRaw([]byte("x"), raw)
	switch {
	case !ok && string(got) != "x":
		t.Errorf("AppendRaw(%q) failed but appended: %q", raw, got)
	case ok && (err != nil || string(got) != "x"+string(want)):
		t.Errorf("AppendRaw(%q) = %q, want %q (error %v)", raw, got[1:], want, err)
	case !ok && err == nil && bytes.Equal(want, raw) && !tooDeep(raw):
		t.Errorf("AppendRaw(%q) refused what Marshal copies as it is", raw)
	}
}

func FuzzAppendRaw(f *testing.F) {
	for _, s := range trickyRaw {
		f.Add([]byte(s))
	}
	f.Fuzz(checkRaw)
}

// sample is a shape that uses every Decoder method.
type sample struct {
	S string          `json:"s"`
	R json.RawMessage `json:"r"`
	O *inner          `json:"o,omitempty"`
}

type inner struct {
	X string `json:"x"`
}

func decodeSample(data []byte) (sample, bool) {
	var s sample
	d := NewDecoder(data)
	d.Open()
	s.S = d.Key("s").String()
	s.R = d.Key("r").Raw()
	if d.Has("o") {
		d.Key("o").Open()
		s.O = &inner{X: d.Key("x").String()}
		d.Close()
	}
	d.Close()
	return s, d.Finish()
}

// Inputs of sample's shape: the first four the decoder takes, the rest are
// near misses it must leave to encoding/json (or take, with its result).
var sampleInputs = []string{
	`{"s":"a","r":{"k":[1,2]}}`,
	`{"s":"","r":null,"o":{"x":"y"}}`,
	`{"s":"é","r":"x","o":{"x":"<&>"}}`,
	" {\n \"s\" : \"a\" , \"r\" : [ ] , \"o\" : { \"x\" : \"\" } } \n",
	`{"s":"a\"b","r":1}`,
	`{"s":"\xff","r":1}`,
	`{"s":"\u00e9","r":1}`,
	`{"s":"a\u0000","r":1}`,
	"{\"s\":\"a\x01\",\"r\":1}",
	`{"s":null,"r":1}`,
	`{"s":1,"r":1}`,
	`{"S":"a","r":1}`,
	`{"s":"a","s":"b","r":1}`,
	`{"r":1,"s":"a"}`,
	`{"s":"a","r":}`,
	`{"s":"a","r":01}`,
	`{"s":"a","r":1,"z":0}`,
	`{"s":"a","r":1}x`,
	`{"s":"a","r":1`,
	`{"s":"a","r":1,"o":null}`,
	`{"s":"a","r":1,"o":{}}`,
	`{"s":"a","r":1,"o":{"x":"1"},}`,
	`{"s":"a","r":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`,
	`[]`, `null`, ``, `{}`,
}

func TestDecoder(t *testing.T) {
	for i, in := range sampleInputs {
		if !checkDecode(t, []byte(in)) && i < 4 {
			t.Errorf("%s was left to encoding/json", in)
		}
	}
}

// checkDecode fails if the Decoder takes data and gets another result than
// encoding/json; it reports whether the Decoder took it.
func checkDecode(t *testing.T, data []byte) bool {
	t.Helper()
	got, ok := decodeSample(data)
	if !ok {
		return false
	}
	var want sample
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatalf("decoded %q, encoding/json fails: %v", data, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %q as\n%#v\nencoding/json:\n%#v", data, got, want)
	}
	return true
}

func FuzzDecoder(f *testing.F) {
	for _, in := range sampleInputs {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data) })
}

func TestStringByte(t *testing.T) {
	if len(stringByte) != 256 {
		t.Fatalf("stringByte has %d entries", len(stringByte))
	}
	for c := range 256 {
		want := byte('.')
		switch {
		case c == '"':
			want = '"'
		case c == '\\':
			want = '\\'
		case c < 0x20:
			want = 'c'
		case c == '<' || c == '>' || c == '&':
			want = 'h'
		case c >= 0x80:
			want = 'u'
		}
		if stringByte[c] != want {
			t.Errorf("stringByte[%#x] = %q, want %q", c, stringByte[c], want)
		}
	}
}
