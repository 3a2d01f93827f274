// Command asynqbench measures Asynq (github.com/hibiken/asynq) doing what
// Orderly's no-op benchmark does: enqueue a count of no-op tasks and process
// them, timed from the first enqueue to the last task done. Each run starts
// its own redis-server (which must be on the PATH) on a free port of
// 127.0.0.1, with the append-only file synced every second, and stops it.
//
// It is a module of its own so that Asynq and go-redis stay out of
// Orderly's go.mod; the end-to-end benchmark (internal/e2ebench) builds it,
// runs it as a child process and reads the one JSON line it prints:
//
//	go run . -tasks 100000          # in internal/e2ebench/asynqbench
//
// It exits with status 3, printing nothing on stdout, when there is no
// redis-server.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// exitNoRedis is the exit status when no redis-server is on the PATH.
const exitNoRedis = 3

func main() {
	var cfg config
	var timeout time.Duration
	flag.IntVar(&cfg.tasks, "tasks", 100_000, "no-op tasks to enqueue and process")
	flag.IntVar(&cfg.size, "size", 256, "each task's payload, bytes")
	flag.IntVar(&cfg.enqueuers, "enqueuers", 16, "goroutines enqueueing at once (Enqueue is synchronous: this is the publish window)")
	flag.IntVar(&cfg.concurrency, "concurrency", 64, "the server's Config.Concurrency")
	flag.DurationVar(&cfg.checkInterval, "task-check-interval", 10*time.Millisecond, "the server's Config.TaskCheckInterval (Asynq's default, 1s, makes the dequeuer sleep up to 1.5 s whenever it finds the queue empty)")
	flag.BoolVar(&cfg.ids, "ids", true, "give each task an id of ours (asynq.TaskID), as Orderly's events carry job ids")
	flag.DurationVar(&timeout, "timeout", 3*time.Minute, "the longest the run may take")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "asynqbench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := run(ctx, cfg)
	if errors.Is(err, ErrNoRedisServer) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(exitNoRedis)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "asynqbench:", err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "asynqbench:", err)
		os.Exit(1)
	}
}
