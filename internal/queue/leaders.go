package queue

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/contract"
)

// leaderAdvisories is where the server announces that a replicated consumer
// of stream has elected a leader: one subject per consumer.
func leaderAdvisories(stream string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED." + stream + ".*"
}

// OnConsumerLeader calls fn with the partition each time the consumer of one
// of workflow's partitions elects a new leader, until stop is called. The
// announcements are core NATS: one sent while this connection is down is
// missed. fn runs on the subscription's goroutine and must not block.
func (c *Conn) OnConsumerLeader(workflow string, fn func(partition int)) (stop func(), err error) {
	prefix := strings.TrimSuffix(leaderAdvisories(contract.EventsStream(workflow)), "*")
	sub, err := c.nc.Subscribe(prefix+"*", func(m *nats.Msg) {
		name := strings.TrimPrefix(m.Subject, prefix)
		if n, ok := strings.CutPrefix(name, strings.TrimSuffix(consumerName(workflow, 0), "0")); ok {
			if p, err := strconv.Atoi(n); err == nil {
				fn(p)
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("queue: consumer leaders of %s: %w", workflow, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
