package worker

import "github.com/orderly-dev/orderly/internal/queue"

// SetDropAck makes w lose the acks of the messages drop picks.
func SetDropAck(w *Worker, drop func(*queue.Msg) bool) { w.dropAck = drop }

// QueueSpec is the adapter's spec of workflow that a worker with cfg
// provisions, for tests that provision before the worker starts.
func QueueSpec(cfg Config, workflow string) queue.Spec {
	return cfg.Queue.spec(workflow, cfg.SharedConsumers)
}
