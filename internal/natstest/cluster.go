package natstest

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a JetStream cluster of in-process servers on loopback.
type Cluster struct {
	t       testing.TB
	opts    []*server.Options
	servers []*server.Server
}

// StartCluster starts an n-node JetStream cluster, each node's store in its
// own t.TempDir(), waits until it has a meta leader, and shuts it down when
// the test ends. Every node routes to the first, the seed, and gossip
// completes the mesh. Client ports, and the routes of every node but the
// seed, are picked by the servers; the seed's route port must be known
// before it starts (JetStream refuses a cluster node without a configured
// route, and the seed routes to itself), so it is reserved until then.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	var dirs []string
	for range n {
		dirs = append(dirs, t.TempDir())
	}
	// Registered after the directories, so it runs before they are removed.
	t.Cleanup(func() {
		for i := range c.servers {
			c.Stop(i)
		}
	})
	seedAddr, releaseSeed := ReserveAddr(t)
	defer releaseSeed()
	seed, err := net.ResolveTCPAddr("tcp", seedAddr)
	if err != nil {
		t.Fatal(err)
	}
	routes := []*url.URL{{Scheme: "nats", Host: seedAddr}}
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			JetStream:  true,
			StoreDir:   dirs[i],
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "orderly-test", Host: "127.0.0.1", Port: server.RANDOM_PORT},
			Routes:     routes,
		}
		if i == 0 {
			o.Cluster.Port = seed.Port
			releaseSeed()
		}
		c.opts = append(c.opts, o)
		c.servers = append(c.servers, nil)
		c.Start(i)
	}
	// A node started again (after Stop) comes back on the ports it had and
	// routes to every node.
	routes = nil
	for _, s := range c.servers {
		routes = append(routes, &url.URL{Scheme: "nats", Host: s.ClusterAddr().String()})
	}
	for i, s := range c.servers {
		c.opts[i].Port = s.Addr().(*net.TCPAddr).Port
		c.opts[i].Cluster.Port = s.ClusterAddr().Port
		c.opts[i].Routes = routes
	}
	c.waitForLeader()
	return c
}

// Start starts node i (again, on its own store, after Stop).
func (c *Cluster) Start(i int) {
	c.t.Helper()
	// A copy: the server keeps the options it is given, and StartCluster
	// changes them once every node is up.
	s, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		c.t.Fatalf("node %d: %v", i, err)
	}
	c.servers[i] = s // for Stop, even if it never gets ready
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		c.t.Fatalf("node %d not ready within 10s", i)
	}
}

// Stop shuts node i down; safe to call twice.
func (c *Cluster) Stop(i int) {
	if s := c.servers[i]; s != nil {
		s.Shutdown()
		s.WaitForShutdown()
		c.servers[i] = nil
	}
}

// URL is the comma-separated client URLs of every node.
func (c *Cluster) URL() string {
	var urls []string
	for _, o := range c.opts {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(urls, ",")
}

func (c *Cluster) waitForLeader() {
	c.t.Helper()
	// A meta leader alone is not enough: until it has heard from every node,
	// a replicated stream finds "no suitable peers for placement".
	deadline := time.Now().Add(30 * time.Second)
	seen := 0
	for time.Now().Before(deadline) {
		for _, s := range c.servers {
			if s != nil && s.JetStreamIsLeader() {
				if seen = len(s.JetStreamClusterPeers()); seen == len(c.servers) {
					return
				}
			}
		}
		time.Sleep(20 * time.Millisecond) // cluster formation has no event to wait on
	}
	c.t.Fatalf("no JetStream meta leader that knows all %d nodes within 30s (it knew %d)", len(c.servers), seen)
}
