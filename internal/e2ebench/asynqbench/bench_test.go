package main

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"
)

// TestAsynqBenchProcessesEveryTask runs the benchmark small against a real
// redis-server: every task is handled and done, the server is stopped, and
// the figures are filled in. Skipped where redis-server is not installed,
// as the end-to-end benchmark then skips the asynq scenario.
func TestAsynqBenchProcessesEveryTask(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("no redis-server on the PATH (Debian: apt-get install redis-server)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := run(ctx, config{tasks: 500, size: 256, enqueuers: 4, concurrency: 8, checkInterval: 10 * time.Millisecond, ids: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Tasks != 500 || res.EPS <= 0 || res.ElapsedNS < res.EnqueueNS || res.RSS == 0 || res.RedisRSS == 0 || res.CPUNS <= 0 {
		t.Errorf("result %+v: want 500 tasks, a rate, enqueue within the elapsed time, both peak RSS", res)
	}
}

// TestAsynqBenchWithoutRedisServer: with no redis-server on the PATH the
// run says so with ErrNoRedisServer (the command then exits with status 3,
// which the end-to-end benchmark reports as a skipped scenario).
func TestAsynqBenchWithoutRedisServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := run(context.Background(), config{tasks: 1, size: 1, enqueuers: 1, concurrency: 1, checkInterval: time.Millisecond})
	if !errors.Is(err, ErrNoRedisServer) {
		t.Fatalf("run without redis-server: %v, want ErrNoRedisServer", err)
	}
}

// TestAsynqBenchRefusesBadConfiguration: nonsense figures are refused
// before anything starts.
func TestAsynqBenchRefusesBadConfiguration(t *testing.T) {
	for _, c := range []config{
		{tasks: 0, size: 1, enqueuers: 1, concurrency: 1, checkInterval: time.Millisecond},
		{tasks: 1, size: 1, enqueuers: 0, concurrency: 1, checkInterval: time.Millisecond},
		{tasks: 1, size: 1, enqueuers: 1, concurrency: 0, checkInterval: time.Millisecond},
		{tasks: 1, size: 1, enqueuers: 1, concurrency: 1, checkInterval: 0},
	} {
		if _, err := run(context.Background(), c); err == nil {
			t.Errorf("run(%+v) = nil error, want a refusal", c)
		}
	}
}
