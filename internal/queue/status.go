package queue

import (
	"fmt"

	"github.com/orderly-dev/orderly/contract"
)

// PublishStatus broadcasts st on its key's status subject, a plain NATS
// publish: live subscribers get it at once, and the workflow's history
// stream (if it keeps one) stores it, with no acknowledgement awaited here.
// The key's state in the bucket is the durable record.
func (c *Conn) PublishStatus(st *contract.Status) error {
	body, err := contract.MarshalStatus(st)
	if err != nil {
		return fmt.Errorf("queue: encode status: %w", err)
	}
	return c.nc.Publish(contract.StatusSubject(st.Workflow, st.Key), body)
}
