package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// config is one run's.
type config struct {
	// tasks is the count of no-op tasks enqueued and processed.
	tasks int
	// size is each task's payload, in bytes.
	size int
	// enqueuers is the count of goroutines enqueueing at once: Asynq's
	// Enqueue is synchronous (one Redis script each), so this is its
	// publish window.
	enqueuers int
	// concurrency is the server's Config.Concurrency.
	concurrency int
	// checkInterval is the server's Config.TaskCheckInterval: how long its
	// one dequeuing goroutine sleeps when it finds the queue empty.
	checkInterval time.Duration
	// ids gives each task an id of ours (asynq.TaskID), as Orderly's
	// events carry job ids; otherwise Asynq makes a UUID.
	ids bool
}

// result is what a run reports to the parent, as one JSON line.
type result struct {
	Tasks int `json:"tasks"`
	// ElapsedNS is from the first enqueue to the last task done: its
	// handler returned and Asynq removed it from Redis (no task pending or
	// active left).
	ElapsedNS int64 `json:"elapsed_ns"`
	// EnqueueNS is from the first enqueue to the last enqueue's return.
	EnqueueNS int64   `json:"enqueue_ns"`
	EPS       float64 `json:"eps"`
	// RSS is this process's peak resident set (client and server), bytes;
	// RedisRSS redis-server's.
	RSS      uint64 `json:"rss"`
	RedisRSS uint64 `json:"redis_rss"`
	// CPUNS is the CPU time, user and system, this process and
	// redis-server spent from the first enqueue to the last task done.
	CPUNS int64 `json:"cpu_ns"`
}

const taskType = "noop"

// run starts a fresh redis-server, an Asynq server with a no-op handler and
// a client in this process, enqueues cfg.tasks tasks from cfg.enqueuers
// goroutines and waits until every one is done.
func run(ctx context.Context, cfg config) (res result, err error) {
	if cfg.tasks < 1 || cfg.size < 0 || cfg.enqueuers < 1 || cfg.concurrency < 1 || cfg.checkInterval <= 0 {
		return res, fmt.Errorf("asynqbench: bad configuration %+v", cfg)
	}
	rs, err := startRedis(ctx)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := rs.stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	opt := asynq.RedisClientOpt{Addr: rs.addr, PoolSize: max(cfg.enqueuers, 10)}

	var handled atomic.Int64
	srv := asynq.NewServer(opt, asynq.Config{
		Concurrency:       cfg.concurrency,
		TaskCheckInterval: cfg.checkInterval,
		LogLevel:          asynq.ErrorLevel,
		ShutdownTimeout:   10 * time.Second,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(taskType, func(context.Context, *asynq.Task) error {
		handled.Add(1)
		return nil
	})
	if err := srv.Start(mux); err != nil {
		return res, fmt.Errorf("asynq server: %w", err)
	}
	defer srv.Shutdown()
	client := asynq.NewClient(opt)
	defer client.Close()
	rc := redis.NewClient(&redis.Options{Addr: rs.addr})
	defer rc.Close()

	payload := []byte(strings.Repeat("x", cfg.size))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	cpu0 := cpuTime() + rs.cpuTime()
	start := time.Now()
	for range cfg.enqueuers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(cfg.tasks) || ctx.Err() != nil {
					return
				}
				var opts []asynq.Option
				if cfg.ids {
					opts = append(opts, asynq.TaskID("a-"+strconv.FormatInt(i, 10)))
				}
				if _, err := client.EnqueueContext(ctx, asynq.NewTask(taskType, payload), opts...); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("enqueue task %d: %w", i, err); cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	res.EnqueueNS = int64(time.Since(start))
	if firstErr != nil {
		return res, firstErr
	}
	if err := waitDone(ctx, rc, &handled, cfg.tasks); err != nil {
		return res, err
	}
	res.Tasks = cfg.tasks
	res.ElapsedNS = int64(time.Since(start))
	res.EPS = float64(cfg.tasks) / time.Duration(res.ElapsedNS).Seconds()
	res.CPUNS = int64(cpuTime() + rs.cpuTime() - cpu0)
	res.RSS, res.RedisRSS = vmHWM("/proc/self/status"), rs.peakRSS()
	return res, nil
}

// waitDone waits until every handler has run, then until Asynq has marked
// the last of them done (it removes a task from the active list after its
// handler returns), polling every 200 µs; the handlers' count alone would
// stop the clock before Asynq's last writes.
func waitDone(ctx context.Context, rc *redis.Client, handled *atomic.Int64, n int) error {
	pending, active := "asynq:{default}:pending", "asynq:{default}:active"
	tick := time.NewTicker(200 * time.Microsecond)
	defer tick.Stop()
	for {
		if handled.Load() >= int64(n) {
			p, err := rc.LLen(ctx, pending).Result()
			if err != nil {
				return fmt.Errorf("redis LLEN: %w", err)
			}
			a, err := rc.LLen(ctx, active).Result()
			if err != nil {
				return fmt.Errorf("redis LLEN: %w", err)
			}
			if p == 0 && a == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d tasks handled: %w", handled.Load(), n, ctx.Err())
		case <-tick.C:
		}
	}
}

// cpuTime is the CPU time, user and system, this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
