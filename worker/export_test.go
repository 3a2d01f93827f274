package worker

import "github.com/orderly-dev/orderly/queue"

// SetDropAck makes w lose the acks of the messages drop picks.
func SetDropAck(w *Worker, drop func(*queue.Msg) bool) { w.dropAck = drop }
