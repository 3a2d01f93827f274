package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNoRedisServer is returned when no redis-server is on the PATH.
var ErrNoRedisServer = errors.New("asynqbench: no redis-server on the PATH (Debian: apt-get install redis-server)")

// redisServer is a redis-server process started for one run.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
	dir  string
	exit chan error // the process's end, once
	log  tailBuffer
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - 4096; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// startRedis starts redis-server on a free port of 127.0.0.1 with its files
// in a new temporary directory, persisting as a production Asynq deployment
// would: the append-only file, fsync every second, no RDB snapshots (they
// would fork mid-run). It returns once the server answers PING.
func startRedis(ctx context.Context) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNoRedisServer
	}
	dir, err := os.MkdirTemp("", "orderly-asynqbench-")
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("redis: %w", err)
	}
	s := &redisServer{addr: "127.0.0.1:" + strconv.Itoa(port), dir: dir, exit: make(chan error, 1)}
	s.cmd = exec.Command(bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
		"--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning")
	// Its log (warnings even at --loglevel warning) is kept, and shown
	// only if it does not start.
	s.cmd.Stdout, s.cmd.Stderr = &s.log, &s.log
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("redis: start %s: %w", bin, err)
	}
	go func() { s.exit <- s.cmd.Wait() }() // ends with the process, which stop ends
	if err := s.ready(ctx); err != nil {
		_ = s.stop()
		return nil, err
	}
	return s, nil
}

// ready waits, at most 10 s, for the server to answer PING.
func (s *redisServer) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rc := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1})
	defer rc.Close()
	var last error
	for {
		if last = rc.Ping(ctx).Err(); last == nil {
			return nil
		}
		select {
		case err := <-s.exit:
			s.exit <- err
			return fmt.Errorf("redis: exited before answering (%v); its log:\n%s", err, s.log.String())
		case <-ctx.Done():
			return fmt.Errorf("redis at %s: no answer to PING in 10s (%w); its log:\n%s", s.addr, last, s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop ends the server (SIGTERM, then SIGKILL after 10 s) and removes its
// directory.
func (s *redisServer) stop() error {
	defer os.RemoveAll(s.dir)
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exit:
		return nil
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exit
		return errors.New("redis: did not stop in 10s after SIGTERM; killed")
	}
}

// peakRSS is the server's peak resident set (VmHWM), in bytes; 0 if unknown.
func (s *redisServer) peakRSS() uint64 {
	return vmHWM("/proc/" + strconv.Itoa(s.cmd.Process.Pid) + "/status")
}

func vmHWM(statusFile string) uint64 {
	f, err := os.Open(statusFile)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// freePort asks the kernel for a free port of 127.0.0.1. Another process
// could take it before redis-server binds it; startRedis then fails plainly.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// cpuTime is the CPU time, user and system, the server has used, from
// /proc/<pid>/stat (in clock ticks, 100 a second on Linux); 0 if unknown.
func (s *redisServer) cpuTime() time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(s.cmd.Process.Pid) + "/stat")
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
