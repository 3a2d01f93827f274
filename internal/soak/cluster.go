package soak

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// normalStore is each node's JetStream file store limit outside a
// disk-full fault: set (not dynamic), so that a reload may raise a small
// limit back to it.
const normalStore = 2 << 30

// node is one nats-server process of the cluster.
type node struct {
	*proc
	index                       int
	port, clusterPort, httpPort int
	dir, conf                   string

	mu       sync.Mutex
	maxStore int64 // the limit its configuration file says
}

// cluster is three (or more) nats-server processes forming one JetStream
// cluster on loopback. Routes stay between the nodes: no_advertise keeps
// clients from learning the other nodes' addresses, so a worker reaches
// the cluster through its proxy only.
type cluster struct {
	nodes []*node
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func newCluster(dir, bin string, n int, onExit func(string, error, string)) (*cluster, error) {
	c := &cluster{}
	for i := range n {
		nd := &node{index: i, dir: filepath.Join(dir, fmt.Sprintf("n%d", i)), maxStore: normalStore}
		for _, p := range []*int{&nd.port, &nd.clusterPort, &nd.httpPort} {
			port, err := freePort()
			if err != nil {
				return nil, err
			}
			*p = port
		}
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			return nil, err
		}
		nd.conf = filepath.Join(dir, fmt.Sprintf("n%d.conf", i))
		nd.proc = &proc{
			name: fmt.Sprintf("n%d", i), bin: bin, logPath: filepath.Join(dir, fmt.Sprintf("n%d.log", i)),
			args: func() []string { return []string{"-c", nd.conf} }, onExit: onExit,
		}
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		if err := c.writeConf(nd, normalStore); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// writeConf writes nd's configuration with maxStore as its file store limit.
func (c *cluster) writeConf(nd *node, maxStore int64) error {
	var routes []string
	for _, o := range c.nodes {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", o.clusterPort))
	}
	conf := fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
server_tags: ["node:n%d"]
jetstream {
  store_dir: %q
  max_file_store: %d
  max_memory_store: 268435456
}
cluster {
  name: soak
  listen: 127.0.0.1:%d
  routes: [%s]
  no_advertise: true
}
`, nd.index, nd.port, nd.httpPort, nd.index, nd.dir, maxStore, nd.clusterPort, strings.Join(routes, ", "))
	if err := os.WriteFile(nd.conf, []byte(conf), 0o644); err != nil {
		return err
	}
	nd.mu.Lock()
	nd.maxStore = maxStore
	nd.mu.Unlock()
	return nil
}

// addr is where nd takes clients.
func (nd *node) addr() string { return fmt.Sprintf("127.0.0.1:%d", nd.port) }

// url is the comma-separated client URLs of every node, first preferred.
func (c *cluster) urls(first int) string {
	var us []string
	for i := range c.nodes {
		us = append(us, "nats://"+c.nodes[(first+i)%len(c.nodes)].addr())
	}
	return strings.Join(us, ",")
}

// start starts every node and waits until the cluster can place a
// replicated stream: every node is up and the meta leader knows them all.
func (c *cluster) start(ctx context.Context) error {
	for _, nd := range c.nodes {
		if err := nd.start(); err != nil {
			return err
		}
	}
	for _, nd := range c.nodes {
		if err := nd.waitUp(ctx); err != nil {
			return err
		}
	}
	nc, err := nats.Connect(c.urls(0), nats.Name("orderly-soak-probe"))
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := js.CreateStream(pctx, jetstream.StreamConfig{Name: "SOAK_PROBE", Subjects: []string{"soak.probe"}, Replicas: len(c.nodes), Storage: jetstream.MemoryStorage})
		if err == nil {
			err = js.DeleteStream(pctx, "SOAK_PROBE")
		}
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: no replicated stream could be placed: %v", err)
		case <-time.After(250 * time.Millisecond): // cluster formation has no event to wait on
		}
	}
}

// waitUp waits until nd takes clients with JetStream enabled.
func (nd *node) waitUp(ctx context.Context) error {
	return waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", nd.httpPort))
}

// waitHealthy waits until nd reports itself healthy: JetStream current
// with the cluster.
func (nd *node) waitHealthy(ctx context.Context) error {
	return waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.httpPort))
}

// storeSize is the bytes under nd's store directory.
func (nd *node) storeSize() int64 {
	var n int64
	_ = filepath.WalkDir(nd.dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// fillDisk restarts nd with a file store limit just above what it holds:
// from then on its disk is full.
func (c *cluster) fillDisk(ctx context.Context, nd *node) (int64, error) {
	nd.stop(syscall.SIGTERM, 10*time.Second)
	limit := nd.storeSize() + 256<<10
	if err := c.writeConf(nd, limit); err != nil {
		return 0, err
	}
	if err := nd.start(); err != nil {
		return 0, err
	}
	return limit, nd.waitUp(ctx)
}

// freeDisk gives nd its normal file store limit back. A restart, not a
// configuration reload: JetStream allows raising the limit at run time,
// but an asset whose assignment failed for want of room stays failed
// until the server starts again (seen with 2.15: /healthz kept saying
// "stream assignment error: insufficient storage resources available"
// after the reload).
func (c *cluster) freeDisk(ctx context.Context, nd *node) error {
	nd.stop(syscall.SIGTERM, 10*time.Second)
	if err := c.writeConf(nd, normalStore); err != nil {
		return err
	}
	if err := nd.start(); err != nil {
		return err
	}
	return nd.waitUp(ctx)
}
