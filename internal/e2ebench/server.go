package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/orderly-dev/orderly/embedded"
)

// serveEnv, when set to a directory, makes this binary serve NATS from that
// store instead of benchmarking: the child of -server process.
const serveEnv = "ORDERLY_E2EBENCH_SERVE"

// natsServer is the server a run measures against: in this process, or in
// a child process so that the two memories can be told apart.
type natsServer struct {
	url  string
	pid  int // the child's; 0 in this process
	stop func() error
}

// startServer starts the benchmark's nats-server on 127.0.0.1 with its
// store in dir.
func startServer(ctx context.Context, mode, dir string) (*natsServer, error) {
	if mode == "inproc" {
		srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: dir})
		if err != nil {
			return nil, err
		}
		return &natsServer{url: srv.ClientURL(), stop: func() error { srv.Shutdown(); return nil }}, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), serveEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe() // closed by us (or by our death): the child exits
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() error {
		_ = stdin.Close()
		return cmd.Wait()
	}
	url := make(chan string, 1)
	go func() { // ends with the child's stdout
		s := bufio.NewScanner(stdout)
		if s.Scan() {
			url <- s.Text()
		}
		close(url)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case u, ok := <-url:
		if ok && strings.HasPrefix(u, "nats://") {
			return &natsServer{url: u, pid: cmd.Process.Pid, stop: stop}, nil
		}
		err = fmt.Errorf("server process: started without a URL")
	case <-time.After(30 * time.Second):
		err = fmt.Errorf("server process: no URL after 30s")
	case <-ctx.Done():
		err = ctx.Err()
	}
	_ = cmd.Process.Kill()
	_ = stop()
	return nil, err
}

// serve runs an embedded server from dir until stdin closes or a signal
// comes, printing its URL first.
func serve(dir string) error {
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	fmt.Println(srv.ClientURL())
	done := make(chan struct{})
	go func() { // ends when the parent closes stdin or dies
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	select {
	case <-done:
	case <-sig:
	}
	return nil
}

// resetPeak restarts the child's peak RSS (nothing in this process: the
// caller resets its own).
func (s *natsServer) resetPeak() {
	if s.pid != 0 {
		_ = os.WriteFile("/proc/"+strconv.Itoa(s.pid)+"/clear_refs", []byte("5"), 0)
	}
}

// peakRSS is the child's peak RSS since resetPeak; 0 in this process.
func (s *natsServer) peakRSS() uint64 {
	if s.pid == 0 {
		return 0
	}
	return vmHWM("/proc/" + strconv.Itoa(s.pid) + "/status")
}

// cpuTime is the CPU time, user and system, of the child server process
// from /proc/<pid>/stat (in clock ticks, 100 a second on Linux); 0 in this
// process or if unknown.
func (s *natsServer) cpuTime() time.Duration {
	if s.pid == 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(s.pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing one. utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * (time.Second / 100)
}
