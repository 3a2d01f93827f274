package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Errors of CheckFields, for errors.Is.
var (
	// ErrNotObject: the value is not a JSON object.
	ErrNotObject = errors.New("not a JSON object")
	// ErrUnknownField: a member's name is none of those allowed. Names match
	// exactly: "Event" is not "event".
	ErrUnknownField = errors.New("unknown field")
	// ErrDuplicateField: a member's name comes twice.
	ErrDuplicateField = errors.New("duplicate field")
	// ErrSyntax: the value is not valid JSON.
	ErrSyntax = errors.New("invalid JSON")
)

// CheckFields reports whether data is a JSON object whose members' names are
// among names, each at most once, spelled exactly (after unescaping, so
// "ev\u0065nt" is "event"). It looks at the top level only. encoding/json
// matches names case-insensitively and lets the last of two equal names win;
// a decoder that must refuse both runs this beside it.
//
// It checks the syntax of the names and of the object around them, and
// skips the members' values without looking into them: call it on data that
// encoding/json has decoded without error. At most 64 names.
func CheckFields(data []byte, names ...string) error {
	if len(names) > 64 {
		panic("jsonx: CheckFields takes at most 64 names")
	}
	s := scanner{data: data}
	i := s.space(0)
	if i >= len(data) || data[i] != '{' {
		return ErrNotObject
	}
	i = s.space(i + 1)
	if i < len(data) && data[i] == '}' {
		return trailing(&s, i+1)
	}
	var seen uint64
	for {
		if i >= len(data) || data[i] != '"' {
			return ErrSyntax
		}
		end := s.str(i)
		if end < 0 {
			return ErrSyntax
		}
		name := data[i+1 : end-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			var n string
			if json.Unmarshal(data[i:end], &n) != nil {
				return ErrSyntax
			}
			name = []byte(n)
		}
		k := -1
		for j, n := range names {
			if string(name) == n {
				k = j
				break
			}
		}
		switch {
		case k < 0:
			return fmt.Errorf("%w %q", ErrUnknownField, name)
		case seen&(1<<k) != 0:
			return fmt.Errorf("%w %q", ErrDuplicateField, name)
		}
		seen |= 1 << k
		if i = s.space(end); i >= len(data) || data[i] != ':' {
			return ErrSyntax
		}
		if i = skipValue(data, s.space(i+1)); i < 0 {
			return ErrSyntax
		}
		if i = s.space(i); i >= len(data) {
			return ErrSyntax
		}
		switch data[i] {
		case ',':
			i = s.space(i + 1)
		case '}':
			return trailing(&s, i+1)
		default:
			return ErrSyntax
		}
	}
}

// trailing reports whether only whitespace follows position i.
func trailing(s *scanner, i int) error {
	if s.space(i) != len(s.data) {
		return ErrSyntax
	}
	return nil
}

// skipValue returns the end of the value starting at data[i], or -1. It
// checks no more than it must to find the end (strings whole, brackets
// balanced), at any depth and without recursion: the value's syntax is the
// caller's to check.
func skipValue(data []byte, i int) int {
	if i >= len(data) {
		return -1
	}
	s := scanner{data: data}
	switch data[i] {
	case '"':
		return s.str(i)
	case '{', '[':
		depth := 0
		for ; i < len(data); i++ {
			switch data[i] {
			case '"':
				end := s.str(i)
				if end < 0 {
					return -1
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	// A number or a literal: it runs to the next delimiter.
	j := i
	for j < len(data) && strings.IndexByte(",:{}[]\" \t\n\r", data[j]) < 0 {
		j++
	}
	if j == i {
		return -1
	}
	return j
}
