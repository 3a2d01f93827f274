package jsonx

import "encoding/json"

// Unmarshal is json.Unmarshal(data, v) for a zero *v: fast decodes the one
// shape its caller writes, and encoding/json decodes whatever fast does not
// take, so the result is always encoding/json's.
func Unmarshal[T any](data []byte, v *T, fast func([]byte) (T, bool)) error {
	if r, ok := fast(data); ok {
		*v = r
		return nil
	}
	// Into a variable of its own: handing v to encoding/json would move the
	// caller's variable to the heap on the fast path too.
	var slow T
	err := json.Unmarshal(data, &slow)
	*v = slow
	return err
}
