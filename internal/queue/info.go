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

// Lag returns the events of the given partitions of workflow that are
// stored and not yet acknowledged: for each partition, its consumer's
// events not yet delivered and those delivered and not yet acknowledged.
// One request per partition.
func (c *Conn) Lag(ctx context.Context, workflow string, partitions []int) (uint64, error) {
	var lag uint64
	for _, p := range partitions {
		cons, err := c.js.Consumer(ctx, contract.EventsStream(workflow), consumerName(workflow, p))
		if err != nil {
			return 0, fmt.Errorf("queue: consumer of %s partition %d: %w", workflow, p, err)
		}
		info := cons.CachedInfo()
		lag += info.NumPending + uint64(max(info.NumAckPending, 0))
	}
	return lag, nil
}

// DeadLetters returns the number of dead letters workflow holds: the
// messages in its dead-letter stream.
func (c *Conn) DeadLetters(ctx context.Context, workflow string) (uint64, error) {
	s, err := c.js.Stream(ctx, contract.DeadLetterStream(workflow))
	if err != nil {
		return 0, fmt.Errorf("queue: dead letters of %s: %w", workflow, err)
	}
	return s.CachedInfo().State.Msgs, nil
}
