package queue

import (
	"context"
	"fmt"

	"github.com/orderly-dev/orderly/contract"
)

// Info describes a workflow's queue as JetStream sees it.
type Info struct {
	// Partitions is the stream's partition count.
	Partitions int
	// Pending is the number of events stored and not yet acknowledged.
	Pending uint64
	// Limit is the most events the stream stores (QueueLimit).
	Limit int64
}

// Info reads the state of the workflow's events stream.
func (c *Conn) Info(ctx context.Context, workflow string) (Info, error) {
	s, err := c.js.Stream(ctx, contract.EventsStream(workflow))
	if err != nil {
		return Info{}, fmt.Errorf("queue: stream of %s: %w", workflow, err)
	}
	info := s.CachedInfo()
	n, _ := partitionsOf(info.Config)
	return Info{Partitions: n, Pending: info.State.Msgs, Limit: info.Config.MaxMsgs}, nil
}
