package natstest

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ProcCluster is a JetStream cluster of nats-server processes on loopback:
// what a test needs when a node must die as a machine or kill -9 kills it,
// with no goodbye (an in-process server's Shutdown hands its Raft
// leaderships over first, so its peers never wait for an election). The
// binary is built once per test binary from the module's own nats-server.
//
// Clients connect without credentials and land in the account APP; SysURL
// connects as the system account (for the meta leader's stepdown).
type ProcCluster struct {
	t     testing.TB
	nodes []*procNode
}

type procNode struct {
	name, conf        string
	port, cport, http int
	cmd               *exec.Cmd
	exited            chan struct{}
	out               *Output
}

// SysUser and SysPassword are the system account's user in a ProcCluster.
const SysUser, SysPassword = "sys", "sys"

// natsServer builds the nats-server binary once per test binary.
var natsServer = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "orderly-nats-server")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build nats-server: %v\n%s", err, out)
	}
	return bin, nil
})

// StartProcCluster starts an n-node cluster of nats-server processes, each
// with its store in its own t.TempDir(), waits until every node reports
// JetStream healthy, and kills them when the test ends.
func StartProcCluster(t testing.TB, n int) *ProcCluster {
	t.Helper()
	c := NewProcCluster(t, n)
	for i := range c.nodes {
		c.start(i)
	}
	for i := range c.nodes {
		c.WaitHealthy(i, Timeout)
	}
	return c
}

// NewProcCluster is StartProcCluster without the start: the nodes are
// configured, their ports taken (each port is free from the moment it
// is picked, as with ReserveAddr), and none runs until Start; a test can
// start them one at a time, as a cluster forms.
func NewProcCluster(t testing.TB, n int) *ProcCluster {
	t.Helper()
	c := &ProcCluster{t: t}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.Kill(i)
		}
		if t.Failed() {
			for _, nd := range c.nodes {
				t.Logf("%s's log (tail):\n%s", nd.name, tail(nd.out.String(), 40))
			}
		}
	})
	var releases []func()
	reserve := func() int {
		addr, release := ReserveAddr(t)
		releases = append(releases, release)
		var port int
		fmt.Sscanf(addr[strings.LastIndexByte(addr, ':')+1:], "%d", &port)
		return port
	}
	for i := range n {
		c.nodes = append(c.nodes, &procNode{name: fmt.Sprintf("n%d", i), port: reserve(), cport: reserve(), http: reserve(), out: &Output{}})
	}
	var routes []string
	for _, nd := range c.nodes {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", nd.cport))
	}
	for _, nd := range c.nodes {
		dir := t.TempDir()
		nd.conf = filepath.Join(dir, "nats.conf")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster { name: orderly-test, listen: 127.0.0.1:%d, routes: [%s] }
accounts {
  SYS { users: [{user: %s, password: %s}] }
  APP { jetstream: enabled, users: [{user: app, password: app}] }
}
system_account: SYS
no_auth_user: app
`, nd.name, nd.port, nd.http, filepath.Join(dir, "store"), nd.cport, strings.Join(routes, ", "), SysUser, SysPassword)
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range releases {
		r()
	}
	return c
}

// Start starts node i again, on its store and ports, after Kill.
func (c *ProcCluster) Start(i int) {
	c.t.Helper()
	c.start(i)
}

func (c *ProcCluster) start(i int) {
	c.t.Helper()
	bin, err := natsServer()
	if err != nil {
		c.t.Fatal(err)
	}
	nd := c.nodes[i]
	nd.cmd = exec.Command(bin, "-c", nd.conf)
	nd.cmd.Stdout, nd.cmd.Stderr = nd.out, nd.out
	nd.cmd.SysProcAttr = procAttr()
	if err := nd.cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", nd.name, err)
	}
	nd.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(nd.cmd, nd.exited)
}

// Kill kills node i with SIGKILL and waits for it to be gone; safe to call
// twice.
func (c *ProcCluster) Kill(i int) {
	nd := c.nodes[i]
	if nd.cmd == nil {
		return
	}
	_ = nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.exited
	nd.cmd = nil
}

// WaitHealthy waits up to d until node i's /healthz says JetStream is
// healthy: it is connected to a meta leader and its streams and consumers
// are current.
func (c *ProcCluster) WaitHealthy(i int, d time.Duration) {
	c.t.Helper()
	nd := c.nodes[i]
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.http)
	deadline := time.Now().Add(d)
	hc := &http.Client{Timeout: 5 * time.Second}
	for {
		code, body := 0, ""
		if resp, err := hc.Get(url); err != nil {
			body = err.Error()
		} else {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, body = resp.StatusCode, string(b)
		}
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not healthy within %s: %d %s", nd.name, d, code, body)
		}
		time.Sleep(50 * time.Millisecond) // health has no event to wait on
	}
}

// Name is node i's server name (n0, n1, ...), as the server reports it as a
// leader.
func (c *ProcCluster) Name(i int) string { return c.nodes[i].name }

// Index is the index of the node named name, -1 if none is.
func (c *ProcCluster) Index(name string) int {
	for i, nd := range c.nodes {
		if nd.name == name {
			return i
		}
	}
	return -1
}

// URL is the comma-separated client URLs of every node.
func (c *ProcCluster) URL() string {
	var urls []string
	for i := range c.nodes {
		urls = append(urls, c.NodeURL(i))
	}
	return strings.Join(urls, ",")
}

// NodeURL is node i's client URL.
func (c *ProcCluster) NodeURL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].port)
}

// MonitorURL is node i's monitoring address (/jsz, /healthz).
func (c *ProcCluster) MonitorURL(i int) string {
	return fmt.Sprintf("http://127.0.0.1:%d", c.nodes[i].http)
}

func tail(s string, lines int) string {
	ls := strings.SplitAfter(s, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "")
}
