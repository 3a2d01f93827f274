package worker

import "github.com/orderly-dev/orderly/internal/queue"

// SetDropAck makes w lose the acks of the messages drop picks.
func SetDropAck(w *Worker, drop func(*queue.Msg) bool) { w.dropAck = drop }

// SetCrash makes the actor of a key stop dead at a stage of a commit
// ("before" or "after") when crash says so, until w stops hard.
func SetCrash(w *Worker, crash func(key, stage string) bool) { w.crash = crash }

// QueueSpec is the adapter's spec of workflow that a worker with cfg
// provisions, for tests that provision before the worker starts.
func QueueSpec(cfg Config, workflow string) queue.Spec {
	s := cfg.Queue.spec(workflow, cfg.SharedConsumers)
	s.NoIndex = cfg.DisableInventory
	return s
}
