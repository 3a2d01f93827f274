package queue

import "github.com/orderly-dev/orderly/contract"

// The hand-written codecs, for the benchmarks in package queue_test
// (functions, not variables holding them, so that escape analysis sees the
// calls as the real callers' are seen).

func MarshalEnvelope(ev *contract.Envelope) ([]byte, error) { return marshalEnvelope(ev) }
func MarshalStatus(st *contract.Status) ([]byte, error)     { return marshalStatus(st) }

// UnmarshalStatus is not inlined: in package queue_test the call to the
// generic jsonx.Unmarshal would lose its escape information and move st to
// the heap, which SubscribeStatus, in package queue, does not.
//
//go:noinline
func UnmarshalStatus(data []byte, st *contract.Status) error { return unmarshalStatus(data, st) }
