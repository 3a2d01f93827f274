package main

import (
	"context"
	"testing"
	"time"
)

// TestSmall runs every scenario but idle and million at a small scale, so the
// benchmark cannot rot between the runs that produce BENCHMARKS.md: each
// scenario fails the run if an event is lost, settles twice or errs.
func TestSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, []string{
		"-repeat", "1", "-events", "2000", "-work-events", "2000", "-keys", "200",
		"-rate", "1000", "-paced", "500ms", "-work", "1ms",
		"-only", "raw,rawstate,noop,work,paced,pending",
		// Pending work through a worker whose memory limit holds it to
		// 100 actors, so that the partitions wait for room.
		"-pending-keys", "500", "-pending-work", "5ms", "-memory-limit", "48MiB",
		"-timeout", "60s",
	})
	if err != nil {
		t.Fatal(err)
	}
}
