package natstest

import (
	"strings"
	"testing"
	"time"
)

// TestStartClusterPicksPortsAndRestartsANode: every node listens where it
// says, and a node stopped and started again comes back on its ports and
// routes to both others.
func TestStartClusterPicksPortsAndRestartsANode(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, 3)
	urls := strings.Split(c.URL(), ",")
	if len(urls) != 3 {
		t.Fatalf("URL %q: want 3 nodes", c.URL())
	}
	for i, s := range c.servers {
		if s.ClientURL() != urls[i] {
			t.Errorf("node %d listens at %s, URL says %s", i, s.ClientURL(), urls[i])
		}
	}
	c.Stop(1)
	c.Start(1)
	if got := c.servers[1].ClientURL(); got != urls[1] {
		t.Errorf("node 1 restarted at %s, was %s", got, urls[1])
	}
	deadline := time.Now().Add(Timeout)
	for c.servers[1].NumRoutes() < 2 { // route formation has no event to wait on
		if time.Now().After(deadline) {
			t.Fatalf("restarted node 1 has %d routes after %s, want 2", c.servers[1].NumRoutes(), Timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
