package worker_test

import (
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/queue"
)

// rawPublish stores body as an event without any checks, as a careless
// producer using plain NATS would.
func rawPublish(c *queue.Conn, workflow, key string, body []byte) error {
	return c.PublishRaw(contract.EventSubject(workflow, key), body)
}
