// Command e2ebench measures Orderly end to end against raw JetStream, in one
// run, on one fresh embedded nats-server: in this process by default (peak
// RSS then counts the server, the worker and the load generator together),
// or with -server process in a child process, so that the worker's memory
// is measured apart from the broker's.
//
//	go run ./internal/e2ebench            # or: make bench-e2e
//	go run ./internal/e2ebench -only raw,noop -cpuprofile cpu.out -memprofile mem.out
//	go run ./internal/e2ebench -only million -server process
//	go run ./internal/e2ebench -only pending -server process -memory-limit 512MiB
//
// Scenarios (-only picks some; default: all but million, pending and features):
//
//	raw      raw JetStream: PublishAsync with a window of 4096, one pull
//	         consumer taking 256 messages per pull, explicit ack, file
//	         storage, 256-byte messages, over -keys subjects
//	rawstate the broker work of Orderly's no-op pipeline done with raw
//	         JetStream alone: raw, plus per message an asynchronous write to
//	         a one-message-per-subject stream, then the ack and a status
//	         publish received on a third connection (a ceiling for noop)
//	noop     Orderly, a workflow whose client event makes a transition with
//	         no action: enqueue → settled status; each job id made for its
//	         one publish (client.WithMadeJobID), as a producer that gives
//	         none gets, so not claimed (here and in every scenario but
//	         noopids)
//	noopids  noop with job ids given (client.WithJobID), as a producer's
//	         own idempotency keys: looked up by the producer, claimed by
//	         the worker
//	order    Orderly, the reference workflow (package order): -order-keys
//	         (20,000) distinct keys, one start_processing each, whose
//	         fetch_order action's gateway answers at once: enqueue → the
//	         settled status of its outcome (two commits per event)
//	wakeups  order with ResumeAfter 3s, ended once every resume wake-up is
//	         gone from the timers stream (fired and handled, or removed)
//	         and the events stream is empty: the CPU per event with the
//	         wake-ups' cost in it (the order scenario ends before they
//	         are due); not run by default
//	toggle   noop with every event a change of its key's state (open ⇄
//	         waiting): the inventory's costly path, an entry written and the
//	         old one purged per event; not run by default
//	work     Orderly, a workflow whose client event starts one action that
//	         sleeps -work (10ms): enqueue → settled status of its outcome
//	asynq    Asynq v0.26 on a redis-server of its own (appendfsync
//	         everysec): -events no-op tasks enqueued → processed, by
//	         internal/e2ebench/asynqbench (a module of its own) in a child
//	         process; skipped with a note when redis-server is not installed
//	paced    raw and both workflows at -rate events/s for -paced: enqueue-ack
//	         and enqueue → settled (raw: → consumed) latencies, the producer
//	         in a process of its own (-producer process, the default) or in
//	         this one (-producer inproc)
//	idle     heap and goroutines per idle actor: -keys actors, measured
//	         before and after they are passivated
//	million  1,000,000 distinct keys, one event each, through the default
//	         worker (MaxActors 100,000): peak RSS and live actors
//	history  noop with the status history off and on (the default), in
//	         turns: what keeping every status costs
//	features noop, and its variant whose every event changes its key's
//	         state, with the status history and the inventory both off, each
//	         alone and both on (the defaults), in turns: what each costs per
//	         event, side by side (-only inventory runs it too)
//	pending  -pending-keys (100,000) distinct keys, one event each that
//	         starts an action of -pending-work (500ms), through a worker
//	         given -memory-limit (512MiB): peak RSS, Go heap and goroutines,
//	         and the time until every key has settled; run it with
//	         -server process so that the peak RSS is the worker's
//
// Every figure is the median of -repeat runs; each run's value is printed
// beside it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if dir := os.Getenv(serveEnv); dir != "" {
		if err := serve(dir); err != nil {
			fmt.Fprintln(os.Stderr, "e2ebench server:", err)
			os.Exit(1)
		}
		return
	}
	if spec := os.Getenv(produceEnv); spec != "" {
		if err := produce(ctx, spec); err != nil {
			fmt.Fprintln(os.Stderr, "e2ebench producer:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "e2ebench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("e2ebench", flag.ContinueOnError)
	fs.IntVar(&c.repeat, "repeat", 3, "runs of each scenario; the median is reported")
	fs.IntVar(&c.keys, "keys", 10_000, "distinct keys the events are spread over")
	fs.IntVar(&c.events, "events", 100_000, "events per throughput run (raw, noop)")
	fs.IntVar(&c.workEvents, "work-events", 30_000, "events per throughput run of the 10ms-work workflow")
	fs.DurationVar(&c.work, "work", defaultWork, "simulated work of the work workflow's action")
	fs.IntVar(&c.rate, "rate", 5_000, "events/s of the paced runs")
	fs.DurationVar(&c.paced, "paced", defaultPaced, "length of each paced run")
	fs.IntVar(&c.window, "window", 4096, "most publishes awaiting their ack (the Orderly publisher is capped at the 4,000 its connection allows)")
	fs.IntVar(&c.size, "size", 256, "message size in bytes (Orderly: the event body)")
	fs.IntVar(&c.millionKeys, "million-keys", 1_000_000, "distinct keys of the million scenario")
	fs.IntVar(&c.pendingKeys, "pending-keys", 100_000, "distinct keys of the pending scenario")
	fs.DurationVar(&c.pendingWork, "pending-work", 500*time.Millisecond, "each action's work in the pending scenario")
	fs.StringVar(&c.memoryLimit, "memory-limit", "512MiB", "the worker's memory limit in the pending scenario (as worker --memory-limit; \"\" or 0: none)")
	fs.IntVar(&c.concurrency, "concurrency", 0, "worker Config.Concurrency (0: its default)")
	fs.IntVar(&c.maxActors, "max-actors", 0, "worker Config.MaxActors (0: its default)")
	fs.IntVar(&c.partitions, "partitions", 0, "worker Config.Queue.Partitions (0: its default)")
	fs.IntVar(&c.orderKeys, "order-keys", 20_000, "distinct keys of the order scenario, one start_processing each")
	fs.StringVar(&c.producer, "producer", "process", "where the paced runs' producer runs: process (a child process of its own, as a service publishing events) or inproc (in this process, beside the worker)")
	inventory := fs.Bool("inventory", true, "the worker keeps the inventory of keys by state (false: worker Config.DisableInventory)")
	history := fs.Bool("history", true, "the worker keeps the status history (false: worker Config.Queue.HistoryPerKey = worker.NoHistory)")
	fs.StringVar(&c.only, "only", "raw,rawstate,noop,noopids,order,work,asynq,paced,history,idle", "comma-separated scenarios: raw,rawstate,noop,noopids,order,wakeups,toggle,work,asynq,paced,idle,million,pending,history,features")
	fs.BoolVar(&c.million, "million", false, "add the million scenario (about a minute more)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the noop throughput runs (without noop: of the order runs, then of wakeups, then of toggle) to this file")
	fs.StringVar(&c.memProfile, "memprofile", "", "write an allocation profile (the whole process, since start) to this file at the end")
	fs.StringVar(&c.heapProfile, "heapprofile", "", "write the in-use heap profile taken when the Go heap peaked during the Orderly runs to this file")
	fs.StringVar(&c.blockProfile, "blockprofile", "", "write a blocking profile (whole process) to this file at the end")
	fs.StringVar(&c.mutexProfile, "mutexprofile", "", "write a mutex-contention profile (whole process) to this file at the end")
	fs.StringVar(&c.dataDir, "data-dir", "", "the server's store (default: a temporary directory, removed at the end)")
	fs.StringVar(&c.server, "server", "inproc", "where the nats-server runs: inproc (in this process) or process (a child process, so that this process's peak RSS is the worker's and the load generator's alone)")
	fs.DurationVar(&c.timeout, "timeout", defaultTimeout, "the longest one run may take")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.noInventory = !*inventory
	c.noHistory = !*history
	if c.pendingKeys < 1 || c.pendingWork < 0 {
		return c, fmt.Errorf("-pending-keys must be positive and -pending-work not negative")
	}
	if c.repeat < 1 || c.keys < 1 || c.events < 1 || c.workEvents < 1 || c.rate < 1 || c.window < 1 {
		return c, fmt.Errorf("-repeat, -keys, -events, -work-events, -rate and -window must be positive")
	}
	if c.producer != "inproc" && c.producer != "process" {
		return c, fmt.Errorf("-producer %q: inproc or process", c.producer)
	}
	if c.orderKeys < 1 {
		return c, fmt.Errorf("-order-keys must be positive")
	}
	if c.server != "inproc" && c.server != "process" {
		return c, fmt.Errorf("-server %q: inproc or process", c.server)
	}
	if c.size < 64 {
		return c, fmt.Errorf("-size %d: at least 64", c.size)
	}
	return c, nil
}
