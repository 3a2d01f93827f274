package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// fieldsRef is CheckFields by encoding/json's tokenizer: the reference the
// tests hold CheckFields to, on input encoding/json finds valid.
func fieldsRef(data []byte, names ...string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return ErrSyntax
	}
	if tok != json.Delim('{') {
		return ErrNotObject
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ErrSyntax
		}
		name := tok.(string)
		allowed := false
		for _, n := range names {
			allowed = allowed || n == name
		}
		switch {
		case !allowed:
			return ErrUnknownField
		case seen[name]:
			return ErrDuplicateField
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ErrSyntax
		}
	}
	if _, err := dec.Token(); err != nil {
		return ErrSyntax
	}
	if _, err := dec.Token(); err != io.EOF {
		return ErrSyntax
	}
	return nil
}

var fieldInputs = []string{
	`{}`, ` { } `, `{"event":"a"}`, `{"event":"a","data":{"x":[1,{"event":2}]}}`, `{"data":null,"event":"a"}`,
	`{"data":"}\"{,","event":"a"}`, `{"data":-1.5e3 ,"event" : true}`, `{"data":[` + strings.Repeat("[", 700) + strings.Repeat("]", 700) + `]}`,
	`{"ev\u0065nt":"a"}`, `{"Event":"a"}`, `{"EVENT":"a"}`, `{"event":"a","event":"b"}`, `{"event":"a","Event":"b"}`,
	`{"event":"a","extra":1}`, `{"extra":{}}`, `{"":1}`, `{"even\u0074":1,"event":2}`, `{"\ud800":1}`, "{\"event\xff\":1}",
	`[]`, `"event"`, `null`, `1`, `{"event":"a"}x`, `{"event":"a"}{}`, ``, `{`,
}

func TestCheckFields(t *testing.T) {
	for _, in := range fieldInputs {
		checkFields(t, []byte(in))
	}
	for in, want := range map[string]error{
		`{"Event":"a"}`:             ErrUnknownField,
		`{"event":"a","event":"b"}`: ErrDuplicateField,
		`{"event":"a","extra":1}`:   ErrUnknownField,
		`[]`:                        ErrNotObject,
		`{"data":1,"event":"a"}`:    nil,
		`{"ev\u0065nt":"a"}`:        nil,
	} {
		if err := CheckFields([]byte(in), "event", "data"); !errors.Is(err, want) {
			t.Errorf("CheckFields(%s) = %v, want %v", in, err, want)
		}
	}
}

// checkFields holds CheckFields to the reference on what encoding/json
// finds valid (CheckFields's precondition), and requires only that it
// answer, not panic, on the rest.
func checkFields(t *testing.T, data []byte) {
	t.Helper()
	got := CheckFields(data, "event", "data")
	if !json.Valid(data) {
		return
	}
	if want := fieldsRef(data, "event", "data"); !errors.Is(got, want) {
		t.Fatalf("CheckFields(%q) = %v, encoding/json's tokens say %v", data, got, want)
	}
}

func FuzzCheckFields(f *testing.F) {
	for _, in := range fieldInputs {
		f.Add([]byte(in))
	}
	f.Fuzz(checkFields)
}
