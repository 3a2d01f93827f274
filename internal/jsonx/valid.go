package jsonx

// maxDepth bounds the nesting the scanner follows. Deeper values are left to
// encoding/json (whose own limit is 10000), so the recursion stays shallow.
const maxDepth = 512

// Valid reports whether data is one JSON value as encoding/json.Valid does,
// but several times faster. It also reports false for values nested deeper
// than maxDepth; a caller that must tell those apart asks encoding/json.
func Valid(data []byte) bool {
	s := scanner{data: data}
	return s.valid()
}

// scanner checks JSON syntax by recursive descent. It accepts what
// encoding/json's scanner accepts, including invalid UTF-8 in strings (which
// encoding/json also lets through unchanged when it compacts a RawMessage).
type scanner struct {
	data []byte
	// rewrite is set when encoding/json's compaction (what Marshal does to
	// a RawMessage) would change the bytes scanned: whitespace between
	// tokens, or <, >, &, U+2028 or U+2029 (escaped by Marshal).
	rewrite bool
}

// valid reports whether all of data is one value, with optional whitespace
// around it.
func (s *scanner) valid() bool {
	i := s.value(s.space(0), 0)
	return i >= 0 && s.space(i) == len(s.data)
}

func (s *scanner) space(i int) int {
	for ; i < len(s.data); i++ {
		switch s.data[i] {
		case ' ', '\t', '\n', '\r':
			s.rewrite = true
		default:
			return i
		}
	}
	return i
}

// value returns the end of the value starting at data[i], or -1 if there is
// none.
func (s *scanner) value(i, depth int) int {
	if i >= len(s.data) {
		return -1
	}
	switch c := s.data[i]; {
	case c == '"':
		return s.str(i)
	case c == '{':
		return s.object(i, depth+1)
	case c == '[':
		return s.array(i, depth+1)
	case c == '-' || '0' <= c && c <= '9':
		return s.number(i)
	case c == 't':
		return s.literal(i, "true")
	case c == 'f':
		return s.literal(i, "false")
	case c == 'n':
		return s.literal(i, "null")
	}
	return -1
}

func (s *scanner) object(i, depth int) int {
	if depth > maxDepth {
		return -1
	}
	i = s.space(i + 1)
	if i < len(s.data) && s.data[i] == '}' {
		return i + 1
	}
	for {
		if i >= len(s.data) || s.data[i] != '"' {
			return -1
		}
		if i = s.str(i); i < 0 {
			return -1
		}
		if i = s.space(i); i >= len(s.data) || s.data[i] != ':' {
			return -1
		}
		if i = s.value(s.space(i+1), depth); i < 0 {
			return -1
		}
		if i = s.space(i); i >= len(s.data) {
			return -1
		}
		switch s.data[i] {
		case ',':
			i = s.space(i + 1)
		case '}':
			return i + 1
		default:
			return -1
		}
	}
}

func (s *scanner) array(i, depth int) int {
	if depth > maxDepth {
		return -1
	}
	i = s.space(i + 1)
	if i < len(s.data) && s.data[i] == ']' {
		return i + 1
	}
	for {
		if i = s.value(i, depth); i < 0 {
			return -1
		}
		if i = s.space(i); i >= len(s.data) {
			return -1
		}
		switch s.data[i] {
		case ',':
			i = s.space(i + 1)
		case ']':
			return i + 1
		default:
			return -1
		}
	}
}

// str returns the end of the string starting at data[i] (a '"'), or -1.
func (s *scanner) str(i int) int {
	d := s.data
	for i++; i < len(d); i++ {
		class := stringByte[d[i]]
		if class == '.' { // most bytes; faster tested on its own than in a switch
			continue
		}
		switch class {
		case '"':
			return i + 1
		case 'c':
			return -1
		case '\\':
			i++
			if i >= len(d) {
				return -1
			}
			switch d[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(d) || !isHex(d[i+1]) || !isHex(d[i+2]) || !isHex(d[i+3]) || !isHex(d[i+4]) {
					return -1
				}
				i += 4
			default:
				return -1
			}
		case 'h':
			s.rewrite = true
		case 'u':
			if d[i] == 0xE2 && i+2 < len(d) && d[i+1] == 0x80 && d[i+2]&^1 == 0xA8 { // U+2028, U+2029
				s.rewrite = true
			}
		}
	}
	return -1
}

func (s *scanner) number(i int) int {
	d := s.data
	if d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && '1' <= d[i] && d[i] <= '9':
		i = digits(d, i)
	default:
		return -1
	}
	if i < len(d) && d[i] == '.' {
		j := digits(d, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := digits(d, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func (s *scanner) literal(i int, lit string) int {
	if len(s.data)-i < len(lit) || string(s.data[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// digits returns the end of the run of decimal digits at d[i:].
func digits(d []byte, i int) int {
	for i < len(d) && '0' <= d[i] && d[i] <= '9' {
		i++
	}
	return i
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
