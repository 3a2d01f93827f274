package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/orderly-dev/orderly/internal/memlimit"
)

const (
	defaultWork    = 10 * time.Millisecond
	defaultPaced   = 5 * time.Second
	defaultTimeout = 3 * time.Minute
)

type config struct {
	repeat, keys, events, workEvents int
	work                             time.Duration
	rate                             int
	paced                            time.Duration
	window, size                     int
	millionKeys                      int
	pendingKeys                      int
	pendingWork                      time.Duration
	memoryLimit                      string
	concurrency, maxActors           int
	partitions                       int
	orderKeys                        int
	producer                         string
	noInventory                      bool // worker Config.DisableInventory
	noHistory                        bool // worker Config.Queue.HistoryPerKey = worker.NoHistory
	only                             string
	million                          bool
	cpuProfile, memProfile           string
	heapProfile                      string
	blockProfile, mutexProfile       string
	dataDir, server                  string
	timeout                          time.Duration
}

// result is one run of one scenario.
type result struct {
	eps     float64 // events/s, publish of the first → last settled (raw: consumed)
	ackP50  time.Duration
	ackP99  time.Duration
	doneP50 time.Duration // enqueue → settled (raw: → consumed)
	doneP99 time.Duration
	rate    float64 // paced runs: the rate achieved
	rss     uint64  // peak RSS of this process during the run, bytes
	// serverRSS is the server's peak RSS with -server process.
	serverRSS uint64
	actors    int   // peak live actors
	errors    int64 // settled statuses that carried an error
	// heap and goroutines are the peaks, sampled, of this process's Go heap
	// in use (objects, live or not yet swept) and of its goroutines.
	heap       uint64
	goroutines int
	// live and stacks are the peaks of the heap the collector found live
	// and of the goroutine stacks.
	live, stacks uint64
	elapsed      time.Duration // first publish → last settled
	// drained is the time from the last settled to every resume wake-up
	// gone (the wakeups scenario).
	drained time.Duration
	// cpu is the CPU time, user and system, spent per event from the first
	// publish to the last settled by this process (the worker and the load
	// generator) and the server, in this process or not; for asynq by the
	// asynqbench process and its redis-server. serverCPU is the server's
	// share with -server process (0 otherwise).
	cpu, serverCPU time.Duration
	// allocs and allocBytes are the Go heap allocations of this process
	// per event over the same span (with -server inproc, the server's too).
	allocs, allocBytes float64
}

func run(ctx context.Context, args []string) (err error) {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, s := range strings.Split(cfg.only, ",") {
		switch s = strings.TrimSpace(s); s {
		case "raw", "rawstate", "noop", "noopids", "order", "work", "asynq", "paced", "idle", "million", "pending", "history", "features", "wakeups", "toggle":
			want[s] = true
		case "inventory": // what the features scenario measures
			want["features"] = true
		case "":
		default:
			return fmt.Errorf("-only: unknown scenario %q", s)
		}
	}
	if cfg.million {
		want["million"] = true
	}

	if cfg.blockProfile != "" {
		runtime.SetBlockProfileRate(int(100 * time.Microsecond))
	}
	if cfg.mutexProfile != "" {
		runtime.SetMutexProfileFraction(20)
	}
	dir := cfg.dataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "orderly-e2ebench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	srv, err := startServer(ctx, cfg.server, dir)
	if err != nil {
		return err
	}
	defer func() {
		if serr := srv.stop(); serr != nil && err == nil {
			err = fmt.Errorf("server: %w", serr)
		}
	}()
	b := &bench{cfg: cfg, url: srv.url, srv: srv}
	if err := b.connectAdmin(); err != nil {
		return err
	}
	defer b.admin.Close()

	printMachine(cfg, dir)
	start := time.Now()

	var raw, rawState, noop, noopIDs, ord, wake, toggle, work, asq, praw, pnoop, pwork []result
	repeat := func(name string, runs *[]result, f func(i int) (result, error)) error {
		for i := range cfg.repeat {
			r, err := b.timed(ctx, func(ctx context.Context) (result, error) { return f(i) })
			if err != nil {
				return fmt.Errorf("%s run %d: %w", name, i+1, err)
			}
			fmt.Printf("  %-11s run %d/%d: %s\n", name, i+1, cfg.repeat, r)
			*runs = append(*runs, r)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		return nil
	}
	if want["raw"] {
		if err := repeat("raw", &raw, func(i int) (result, error) {
			return b.raw(ctx, fmt.Sprintf("t%d", i), cfg.events, 0)
		}); err != nil {
			return err
		}
	}
	if want["rawstate"] {
		if err := repeat("raw+state", &rawState, func(i int) (result, error) {
			return b.rawState(ctx, fmt.Sprintf("t%d", i), cfg.events)
		}); err != nil {
			return err
		}
	}
	// The CPU profile covers the noop runs, or the order runs without them,
	// or the wakeups runs without either, or the toggle runs.
	profiled := "noop"
	switch {
	case want["noop"]:
	case want["order"]:
		profiled = "order"
	case want["wakeups"]:
		profiled = "wakeups"
	case want["toggle"]:
		profiled = "toggle"
	}
	stopProfile := func() {}
	if want[profiled] {
		if stopProfile, err = startCPUProfile(cfg.cpuProfile); err != nil {
			return err
		}
	}
	if want["noop"] {
		err = repeat("noop", &noop, func(i int) (result, error) {
			return b.orderly(ctx, orderlyRun{kind: kindNoop, name: fmt.Sprintf("noop%d", i), events: cfg.events, keys: cfg.keys})
		})
		if stopProfile(); err != nil {
			return err
		}
	}
	if want["noopids"] {
		if err := repeat("noop ids", &noopIDs, func(i int) (result, error) {
			return b.orderly(ctx, orderlyRun{kind: kindNoop, name: fmt.Sprintf("noopids%d", i), events: cfg.events, keys: cfg.keys, givenIDs: true})
		}); err != nil {
			return err
		}
	}
	if want["order"] {
		err := repeat("order", &ord, func(i int) (result, error) {
			return b.orderly(ctx, orderlyRun{kind: kindOrder, name: fmt.Sprintf("order%d", i), events: cfg.orderKeys, keys: cfg.orderKeys, distinct: true})
		})
		if profiled == "order" {
			stopProfile()
		}
		if err != nil {
			return err
		}
	}
	if want["wakeups"] {
		if err := repeat("wakeups", &wake, func(i int) (result, error) {
			return b.orderly(ctx, orderlyRun{kind: kindOrder, name: fmt.Sprintf("wake%d", i), events: cfg.orderKeys, keys: cfg.orderKeys, distinct: true,
				resumeAfter: wakeupsResumeAfter, drain: true})
		}); err != nil {
			return err
		}
		if profiled == "wakeups" {
			stopProfile()
		}
		fmt.Printf("  wakeups: %.1f µs CPU per event (median) with every resume wake-up gone\n", float64(median(wake, func(r result) time.Duration { return r.cpu }))/1e3)
	}
	if want["toggle"] {
		if err := repeat("toggle", &toggle, func(i int) (result, error) {
			return b.orderly(ctx, orderlyRun{kind: kindToggle, name: fmt.Sprintf("toggle%d", i), events: cfg.events, keys: cfg.keys})
		}); err != nil {
			return err
		}
		if profiled == "toggle" {
			stopProfile()
		}
		fmt.Printf("  toggle: %.0f events/s, %.1f µs CPU per event (medians), every event a change of state\n",
			median(toggle, func(r result) float64 { return r.eps }), float64(median(toggle, func(r result) time.Duration { return r.cpu }))/1e3)
	}
	if want["work"] {
		if err := repeat("work", &work, func(i int) (result, error) {
			return b.orderly(ctx, orderlyRun{kind: kindWork, name: fmt.Sprintf("work%d", i), events: cfg.workEvents, keys: cfg.keys})
		}); err != nil {
			return err
		}
	}
	asynqNote := ""
	if want["asynq"] {
		bin, err := buildAsynq(ctx, dir)
		if err == nil {
			err = repeat("asynq", &asq, func(int) (result, error) { return b.asynq(ctx, bin, cfg.events) })
		}
		switch {
		case errors.Is(err, errNoRedis):
			asynqNote = "asynq: skipped, " + err.Error()
			fmt.Println("  " + asynqNote)
		case err != nil:
			return err
		}
	}
	if want["paced"] {
		n := int(int64(cfg.rate) * int64(cfg.paced) / int64(time.Second))
		if err := repeat("paced raw", &praw, func(i int) (result, error) {
			return b.raw(ctx, fmt.Sprintf("p%d", i), n, cfg.rate)
		}); err != nil {
			return err
		}
		if err := repeat("paced noop", &pnoop, func(i int) (result, error) {
			return b.orderly(ctx, orderlyRun{kind: kindNoop, name: fmt.Sprintf("pnoop%d", i), events: n, keys: cfg.keys, rate: cfg.rate})
		}); err != nil {
			return err
		}
		if err := repeat("paced work", &pwork, func(i int) (result, error) {
			return b.orderly(ctx, orderlyRun{kind: kindWork, name: fmt.Sprintf("pwork%d", i), events: n, keys: cfg.keys, rate: cfg.rate})
		}); err != nil {
			return err
		}
	}
	var hist []historyRun
	if want["history"] {
		if hist, err = b.historyCost(ctx); err != nil {
			return err
		}
	}
	var feats []featureLoad
	if want["features"] {
		if feats, err = b.runFeatures(ctx); err != nil {
			return err
		}
	}
	var idle *idleResult
	if want["idle"] {
		r, err := b.idle(ctx)
		if err != nil {
			return fmt.Errorf("idle: %w", err)
		}
		fmt.Printf("  idle       : %s\n", r)
		idle = &r
	}
	var million *result
	if want["million"] {
		r, err := b.timed(ctx, func(ctx context.Context) (result, error) {
			return b.orderly(ctx, orderlyRun{kind: kindNoop, name: "million", events: cfg.millionKeys, keys: cfg.millionKeys, distinct: true})
		})
		if err != nil {
			return fmt.Errorf("million: %w", err)
		}
		fmt.Printf("  million    : %s\n", r)
		million = &r
	}
	var pending *result
	if want["pending"] {
		limit, err := memlimit.Parse(cfg.memoryLimit)
		if err != nil {
			return fmt.Errorf("-memory-limit: %w", err)
		}
		if cfg.server != "process" {
			fmt.Println("  (pending: without -server process the peak RSS counts the server too)")
		}
		r, err := b.timed(ctx, func(ctx context.Context) (result, error) {
			return b.orderly(ctx, orderlyRun{
				kind: kindWork, name: "pending", events: cfg.pendingKeys, keys: cfg.pendingKeys, distinct: true,
				work: cfg.pendingWork, memoryLimit: limit,
			})
		})
		if err != nil {
			return fmt.Errorf("pending: %w", err)
		}
		fmt.Printf("  pending    : %s\n", r)
		pending = &r
	}
	for name, path := range map[string]string{"allocs": cfg.memProfile, "block": cfg.blockProfile, "mutex": cfg.mutexProfile} {
		if path != "" {
			if err := writeProfile(name, path); err != nil {
				return err
			}
		}
	}

	if len(raw)+len(rawState)+len(noop)+len(noopIDs)+len(ord)+len(work)+len(asq)+len(praw)+len(pnoop)+len(pwork) > 0 {
		fmt.Println()
		printTable(cfg, tables{raw: raw, rawState: rawState, noop: noop, noopIDs: noopIDs, ord: ord, work: work, asynq: asq, asynqNote: asynqNote,
			praw: praw, pnoop: pnoop, pwork: pwork, hist: hist})
	}
	if len(hist) > 0 {
		printHistoryCost(cfg, hist)
	}
	if feats != nil {
		printFeatures(cfg, feats)
	}
	if idle != nil {
		fmt.Printf("\nIdle actors (%d keys, one event each, ActorIdle %s): %s\n", cfg.keys, idleActorIdle, idle)
		per := idle.perActor()
		mark := map[bool]string{true: "met   ", false: "MISSED"}[per <= 4096]
		fmt.Printf("  %s  at most 4 KiB per live idle actor: %.0f B\n", mark, per)
	}
	if million != nil {
		fmt.Printf("\nMillion keys (%d distinct keys, one no-op event each, MaxActors %s): %s events/s, peak RSS %s, peak live actors %d\n",
			cfg.millionKeys, orDefault(cfg.maxActors, "100,000 (default)"), group(million.eps), mib(million.rss), million.actors)
		whose := "server, worker and load generator in one process"
		if cfg.server == "process" {
			whose = fmt.Sprintf("worker and load generator; the server process's own: %.0f MB", float64(million.serverRSS)/1e6)
		}
		mark := map[bool]string{true: "met   ", false: "MISSED"}[million.rss < 300e6]
		fmt.Printf("  %s  1,000,000 keys with peak RSS under 300 MB: %.0f MB (%s)\n", mark, float64(million.rss)/1e6, whose)
	}
	if pending != nil {
		printPending(cfg, *pending)
	}
	fmt.Printf("\nTotal time: %s\n", time.Since(start).Round(time.Second))
	return nil
}

// timed runs f with the run's time limit.
func (b *bench) timed(ctx context.Context, f func(context.Context) (result, error)) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	return f(ctx)
}

func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "e2ebench: cpu profile:", err)
		}
	}, nil
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func printMachine(cfg config, dir string) {
	where := "in this process"
	if cfg.server == "process" {
		where = "in a child process"
	}
	fmt.Printf("Orderly end-to-end benchmark against raw JetStream, one fresh embedded nats-server (%s; store %s)\n", where, dir)
	fmt.Printf("machine: %d CPUs (%s), %s RAM, %s %s/%s, GOMAXPROCS %d\n",
		runtime.NumCPU(), cpuModel(), memTotal(), runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0))
	fmt.Printf("runs of each scenario: %d (the median is reported); %d-byte messages over %d keys; publish window %d (Orderly: %d)\n",
		cfg.repeat, cfg.size, cfg.keys, cfg.window, min(cfg.window, orderlyWindow))
	fmt.Println()
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			var kb uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err == nil {
				return fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return "unknown"
}

func median[T int | int64 | float64 | uint64 | time.Duration](rs []result, f func(result) T) T {
	v := make([]T, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

func maxOf[T int | int64 | uint64](rs []result, f func(result) T) T {
	var m T
	for _, r := range rs {
		m = max(m, f(r))
	}
	return m
}

func orDefault(v int, def string) string {
	if v > 0 {
		return group(float64(v))
	}
	return def
}
