package soak

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/faultnet"
)

// Config is a soak run. A zero field means its default.
type Config struct {
	// Seed draws the fault schedule, the workload and the job ids; the
	// same seed replays the same run (as far as timing allows).
	Seed uint64
	// Duration is how long the load and the faults go on. Default: 2m.
	Duration time.Duration
	// Rate is the events per second sent, all producers together.
	// Default: 100.
	Rate int
	// Keys is how many keys the events go to. Default: 2,000.
	Keys int
	// Producers is how many producers send, each with a connection of its
	// own. Default: 4.
	Producers int
	// Faults are the kinds of fault injected. Default (nil): none; see
	// AllFaults.
	Faults []FaultKind
	// Settle bounds the wait, after the faults, until every acknowledged
	// event is applied and every key settled. Default: 2m.
	Settle time.Duration
	// MemoryLimit is each worker's --memory-limit. Default: 128 MiB.
	MemoryLimit int64
	// Dir holds the run's files: the nodes' stores and configurations,
	// every process's log. Default: a temporary directory, removed after
	// a clean run unless Keep.
	Dir  string
	Keep bool
	// Self is the binary the workers (and, without a nats-server of the
	// module's version on the PATH, the nodes) run: this one. Default:
	// os.Executable().
	Self string
	// NATSServer is the nats-server binary of the nodes. Default: one on
	// the PATH of the version in go.mod, else Self as nats-server.
	NATSServer string
	// Log receives progress lines. Default: discarded.
	Log io.Writer
}

func (c Config) withDefaults() Config {
	if c.Duration == 0 {
		c.Duration = 2 * time.Minute
	}
	if c.Rate == 0 {
		c.Rate = 100
	}
	if c.Keys == 0 {
		c.Keys = 2000
	}
	if c.Producers == 0 {
		c.Producers = 4
	}
	if c.Settle == 0 {
		c.Settle = 2 * time.Minute
	}
	if c.MemoryLimit == 0 {
		c.MemoryLimit = 128 << 20
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return c
}

// The size of the run: three nodes, a worker (and its proxy) per node.
const (
	nodes   = 3
	workers = 3
)

// Worker settings: short enough that faults show (slow work timing out,
// actors passivated and activated again, resumptions) within a short run.
const (
	actionTimeout   = 2 * time.Second
	shutdownTimeout = 5 * time.Second
)

// workerProc is one worker process.
type workerProc struct {
	*proc
	index    int
	id       string
	httpPort int
}

// run is one soak run in progress.
type run struct {
	cfg     Config
	dir     string
	cluster *cluster
	proxies []*faultnet.Proxy
	workers []*workerProc
	gateway string // the gateway file

	mu     sync.Mutex
	exits  []Exit
	errors []string
}

func (r *run) logf(format string, a ...any) {
	fmt.Fprintf(r.cfg.Log, "%s soak: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

func (r *run) errorf(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors = append(r.errors, fmt.Sprintf(format, a...))
}

func (r *run) exited(name string, err error, logTail string) {
	msg := "exit 0"
	if err != nil {
		msg = err.Error()
	}
	r.logf("%s exited on its own: %s", name, msg)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exits = append(r.exits, Exit{Name: name, Worker: strings.HasPrefix(name, "w"), Err: msg, At: time.Now(), LogTail: logTail})
}

// Run runs a soak: a three-node NATS cluster and three workers, a proxy
// between each worker and its node, producers sending a seeded workload,
// faults from a seeded schedule; then, once the faults have stopped and
// everything has settled, it checks the history. An error means the run
// could not be made; what the checker found is in the Result.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	began := time.Now()
	r := &run{cfg: cfg}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "orderly-soak-")
		if err != nil {
			return nil, err
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r.dir = dir
	r.logf("files in %s", dir)
	self := cfg.Self
	if self == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		self = exe
	}
	serverBin, serverArgs := r.natsServer(cfg.NATSServer, self)

	var res *Result
	err := func() error {
		c, err := newCluster(dir, serverBin, nodes, r.exited)
		if err != nil {
			return err
		}
		for _, nd := range c.nodes {
			conf := nd.conf
			nd.args = func() []string { return append(clone(serverArgs), "-c", conf) }
		}
		r.cluster = c
		defer r.teardown()
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err = c.start(sctx)
		cancel()
		if err != nil {
			return err
		}
		r.logf("cluster of %d nodes up (%s)", nodes, c.urls(0))

		r.gateway = filepath.Join(dir, "gateway.json")
		if err := r.setGateway(normalGateway); err != nil {
			return err
		}
		for i := range workers {
			var targets []string
			for j := range nodes {
				targets = append(targets, c.nodes[(i+j)%nodes].addr())
			}
			p, err := faultnet.New(targets...)
			if err != nil {
				return err
			}
			r.proxies = append(r.proxies, p)
			port, err := freePort()
			if err != nil {
				return err
			}
			w := &workerProc{index: i, id: fmt.Sprintf("w%d", i), httpPort: port}
			args := []string{
				WorkerCommand, "--nats-url", p.URL(), "--connect-timeout", "0",
				"--http", fmt.Sprintf("127.0.0.1:%d", port), "--id", w.id,
				"--gateway-file", r.gateway, "--replicas", fmt.Sprint(nodes),
				"--memory-limit", fmt.Sprint(cfg.MemoryLimit), "--actor-idle", "10s",
				"--action-timeout", actionTimeout.String(), "--action-retries", "3",
				"--shutdown-timeout", shutdownTimeout.String(), "--dedupe-window", "1h",
				"--queue-limit", "200000", "--dead-letter-max-bytes", fmt.Sprint(16 << 20),
				"--history-per-key", "10000",
				"--log-level", "info",
			}
			w.proc = &proc{name: w.id, bin: self, logPath: filepath.Join(dir, w.id+".log"),
				args: func() []string { return args }, onExit: r.exited}
			r.workers = append(r.workers, w)
		}
		for _, w := range r.workers {
			if err := w.start(); err != nil {
				return err
			}
		}
		// Restarts what exits on its own from now on, as a process manager
		// would: a worker whose start-up failed, say.
		sctx, stopSupervising := context.WithCancel(ctx)
		var supervising sync.WaitGroup
		supervising.Go(func() { r.supervise(sctx) })
		defer supervising.Wait()
		defer stopSupervising()
		for _, w := range r.workers {
			wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
			err := w.waitReady(wctx)
			cancel()
			if err != nil {
				return fmt.Errorf("worker %s: %w\n%s", w.id, err, tail(w.logPath, 2048))
			}
		}
		r.logf("%d workers ready", workers)
		res, err = r.drive(ctx, began)
		return err
	}()
	if err != nil {
		return nil, fmt.Errorf("soak (files in %s): %w", dir, err)
	}
	if len(res.Anomalies) > 0 {
		res.KeyLogs = keyLogs(r.workers, res.Anomalies)
	}
	if len(res.Anomalies) > 0 || cfg.Keep {
		// The checker can read it again (soak -recheck), with its rules as
		// they are then.
		if err := saveHistory(filepath.Join(dir, "history.json"), res.History); err != nil {
			r.logf("save history: %v", err)
		}
	}
	if cfg.Dir == "" && !cfg.Keep && len(res.Anomalies) == 0 {
		_ = os.RemoveAll(dir)
	} else {
		fmt.Fprintf(cfg.Log, "soak: the run's files (logs, stores) are in %s\n", dir)
	}
	return res, nil
}

// keyLogLines bounds the log lines kept per key.
const keyLogLines = 80

// keyLogs collects, for the key of the first anomaly of each kind, the lines
// of the workers' logs that name it, each prefixed with its worker.
func keyLogs(workers []*workerProc, anomalies []Anomaly) map[string][]string {
	keys := map[string]bool{}
	seen := map[string]bool{}
	for _, a := range anomalies {
		if !seen[a.Kind] && a.Key != "" {
			keys[a.Key] = true
		}
		seen[a.Kind] = true
	}
	out := map[string][]string{}
	for _, w := range workers {
		f, err := os.Open(w.proc.logPath)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			for k := range keys {
				if len(out[k]) < keyLogLines && strings.Contains(line, `"`+k+`"`) {
					out[k] = append(out[k], w.id+": "+line)
				}
			}
		}
		_ = f.Close()
	}
	return out
}

func clone[T any](s []T) []T { return append([]T(nil), s...) }

// natsServer returns the binary and leading arguments that run a node:
// bin if given; else a nats-server on the PATH of the version this module
// requires; else self, which links that version (`soak nats-server`).
func (r *run) natsServer(bin, self string) (string, []string) {
	if bin != "" {
		return bin, nil
	}
	want := serverVersion()
	if p, err := exec.LookPath("nats-server"); err == nil && want != "" {
		out, _ := exec.Command(p, "--version").Output()
		if strings.Contains(string(out), want) {
			r.logf("nodes run %s (%s)", p, want)
			return p, nil
		}
		r.logf("%s is not %s (%q): the nodes run the server linked into this binary", p, want, strings.TrimSpace(string(out)))
	}
	return self, []string{ServerCommand}
}

// serverVersion is the nats-server module version this binary links.
func serverVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/nats-io/nats-server/v2" {
			return d.Version
		}
	}
	return ""
}

func (w *workerProc) waitReady(ctx context.Context) error {
	return waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", w.httpPort))
}

// setGateway writes the gateway file at once (a rename: readers never see
// half of it).
func (r *run) setGateway(g Gateway) error {
	b, err := g.MarshalJSON()
	if err != nil {
		return err
	}
	tmp := r.gateway + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, r.gateway)
}

// drive runs the load and the faults, lets everything settle, and checks.
func (r *run) drive(ctx context.Context, began time.Time) (*Result, error) {
	cfg := r.cfg
	var watch []string
	for _, nd := range r.cluster.nodes {
		watch = append(watch, "nats://"+nd.addr())
	}
	rec, err := startRecorder(watch)
	if err != nil {
		return nil, err
	}
	defer rec.stop()
	mctx, stopMem := context.WithCancel(ctx)
	mem := &memWatch{max: map[string]MemorySample{}}
	var bg sync.WaitGroup
	defer bg.Wait()
	defer stopMem()
	bg.Go(func() { mem.run(mctx, r.workers, cfg.MemoryLimit) })

	plan := Plan(cfg.Seed, cfg.Duration, cfg.Faults, workers, nodes)
	start := time.Now()
	r.logf("load for %s at %d events/s over %d keys; %d fault lanes", cfg.Duration, cfg.Rate, cfg.Keys, len(plan))
	var lanesDone sync.WaitGroup
	for li := range plan {
		lanesDone.Go(func() { r.lane(ctx, start, plan[li]) })
	}
	l := &ledger{}
	lcfg := loadConfig{
		seed: cfg.Seed, urls: func(p int) string { return r.cluster.urls(p % nodes) },
		producers: cfg.Producers, rate: cfg.Rate, keys: cfg.Keys, duration: cfg.Duration,
		grace: 30 * time.Second, workShare: 0.25, poison: 0.004,
	}
	loadErr := make(chan error, 1)
	bg.Go(func() { loadErr <- runLoad(ctx, lcfg, l, func(s string) { r.errorf("%s", s) }) })

	lanesDone.Wait()
	faultsOver := time.Now()
	r.logf("faults over; restoring every node, worker, link and the gateway")
	if err := r.restore(ctx); err != nil {
		return nil, err
	}
	if err := <-loadErr; err != nil {
		return nil, err
	}
	r.logf("load over: %d events sent", len(l.snapshot()))
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	nc, err := nats.Connect(r.cluster.urls(0), nats.Name("orderly-soak-checker"), nats.MaxReconnects(-1), quietErrors)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	c, err := client.New(nc, client.Config{Timeout: 10 * time.Second})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	pubs := l.snapshot()
	states, dls, settled := r.settle(ctx, nc, c, pubs)
	settledAt := time.Now()
	if !settled {
		r.logf("not settled within %s; checking what there is", cfg.Settle)
	}
	// Statuses of the last commits are on their way; one more moment.
	time.Sleep(time.Second) // nothing signals the last status's arrival
	rec.stop()
	stopMem()
	// The status history is the stronger record: it kept what the
	// watchers' connections may have dropped.
	fromHistory, err := r.readHistories(ctx, c, states)
	if err != nil {
		r.logf("status history: %v", err)
	}
	for _, st := range fromHistory {
		rec.add(st)
	}

	var plannedFaults []Fault
	for _, lane := range plan {
		plannedFaults = append(plannedFaults, lane...)
	}
	slices.SortStableFunc(plannedFaults, func(a, b Fault) int { return cmp.Compare(a.At, b.At) })
	r.mu.Lock()
	h := &History{
		Seed: cfg.Seed, Args: replayArgs(cfg),
		Publishes: pubs, Statuses: rec.all(), States: states, DeadLetters: dls,
		Faults: plannedFaults, Memory: mem.samples(), Exits: clone(r.exits), Errors: clone(r.errors),
		StatusesDropped: rec.dropped.Load(), StatusesLive: rec.live(), Acks: rec.ackLog(),
	}
	r.mu.Unlock()
	node := map[string]int{}
	for i, nd := range r.cluster.nodes {
		node[nd.addr()] = i
	}
	h.Links = map[string][]Link{}
	for i, w := range r.workers {
		h.Workers = append(h.Workers, w.id)
		for _, l := range r.proxies[i].Links() {
			h.Links[w.id] = append(h.Links[w.id], Link{Node: node[l.Target], From: l.From, To: l.To})
		}
	}
	anomalies, sum := Check(h)
	res := &Result{
		Seed: cfg.Seed, Duration: cfg.Duration, Args: replayArgs(cfg), Faults: plannedFaults,
		Anomalies: anomalies, Summary: sum, History: h,
		Elapsed: time.Since(began), Settled: settledAt.Sub(faultsOver),
	}
	return res, nil
}

func replayArgs(cfg Config) string {
	kinds := make([]string, len(cfg.Faults))
	for i, k := range cfg.Faults {
		kinds[i] = string(k)
	}
	f := strings.Join(kinds, ",")
	if len(cfg.Faults) == len(AllFaults()) {
		f = "all"
	} else if f == "" {
		f = "none"
	}
	return fmt.Sprintf("-seed %d -duration %s -rate %d -keys %d -faults %s", cfg.Seed, cfg.Duration, cfg.Rate, cfg.Keys, f)
}

// lane injects its faults one after another, each at its planned time or
// as soon as the one before is over; none starts after the load's end.
func (r *run) lane(ctx context.Context, start time.Time, faults []Fault) {
	for i := range faults {
		f := &faults[i]
		if !sleepCtx(ctx, time.Until(start.Add(f.At))) {
			return
		}
		if time.Since(start)+f.Hold > r.cfg.Duration {
			return // it would outlast the load
		}
		r.inject(ctx, f)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// inject does one fault and undoes it after its hold.
func (r *run) inject(ctx context.Context, f *Fault) {
	f.Start = time.Now()
	defer func() { f.End = time.Now() }()
	note := func(format string, a ...any) {
		if f.Note != "" {
			f.Note += "; "
		}
		f.Note += fmt.Sprintf(format, a...)
	}
	ready := func(what string, wait func(context.Context) error) {
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := wait(wctx); err != nil {
			note("%s not ready within 60s", what)
		}
	}
	r.logf("fault: %s", f.plan())
	switch f.Kind {
	case WorkerKill, WorkerTerm:
		w := r.workers[f.Target]
		w.held.Store(true)
		if f.Kind == WorkerKill {
			<-w.signal(syscall.SIGKILL)
		} else if !w.stop(syscall.SIGTERM, shutdownTimeout+20*time.Second) {
			r.errorf("%s did not exit within %s of SIGTERM (killed)", w.id, shutdownTimeout+20*time.Second)
			note("did not exit on SIGTERM")
		}
		sleepCtx(ctx, f.Hold)
		if err := w.start(); err != nil {
			note("restart: %v", err)
		}
		w.held.Store(false)
		ready(w.id, w.waitReady)
	case NodeKill:
		nd := r.cluster.nodes[f.Target]
		nd.held.Store(true)
		f.Cuts = append(f.Cuts, time.Now())
		<-nd.signal(syscall.SIGKILL)
		sleepCtx(ctx, f.Hold)
		if err := nd.start(); err != nil {
			note("restart: %v", err)
		}
		nd.held.Store(false)
		ready(nd.name, nd.waitHealthy)
	case DiskFull:
		nd := r.cluster.nodes[f.Target]
		nd.held.Store(true)
		fctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		f.Cuts = append(f.Cuts, time.Now())
		limit, err := r.cluster.fillDisk(fctx, nd)
		cancel()
		nd.held.Store(false)
		if err != nil {
			note("fill: %v", err)
		} else {
			note("store limit %.1f MiB", float64(limit)/(1<<20))
		}
		sleepCtx(ctx, f.Hold)
		nd.held.Store(true)
		fctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		f.Cuts = append(f.Cuts, time.Now())
		if err := r.cluster.freeDisk(fctx, nd); err != nil {
			note("free: %v", err)
		}
		cancel()
		nd.held.Store(false)
		ready(nd.name, nd.waitHealthy)
	case ProxyCut:
		r.proxies[f.Target].Cut(true)
		sleepCtx(ctx, f.Hold)
		r.proxies[f.Target].Restore()
	case ProxyStall:
		r.proxies[f.Target].Stall()
		sleepCtx(ctx, f.Hold)
		r.proxies[f.Target].Restore()
	case ProxyDelay:
		r.proxies[f.Target].Delay(f.Delay)
		sleepCtx(ctx, f.Hold)
		r.proxies[f.Target].Restore()
	case ProxyDrop:
		r.proxies[f.Target].Drop()
		sleepCtx(ctx, f.Hold)
		r.proxies[f.Target].Restore()
	case GatewaySlow, GatewayFail:
		if err := r.setGateway(Gateway{Latency: f.Latency, FailRate: f.FailRate}); err != nil {
			note("gateway: %v", err)
		}
		sleepCtx(ctx, f.Hold)
		if err := r.setGateway(normalGateway); err != nil {
			note("gateway: %v", err)
		}
	}
}

// supervise restarts, every second, a process that exited on its own (as a
// process manager would), unless a fault holds it down.
func (r *run) supervise(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, w := range r.workers {
			if !w.held.Load() && !w.running() {
				_ = w.start()
			}
		}
		for _, nd := range r.cluster.nodes {
			if !nd.held.Load() && !nd.running() {
				_ = nd.start()
			}
		}
	}
}

// restore ends every fault: each node up with its normal store limit and
// healthy, each link clean, the gateway normal, each worker up and ready.
func (r *run) restore(ctx context.Context) error {
	_ = r.setGateway(normalGateway)
	for _, p := range r.proxies {
		p.Restore()
	}
	for _, nd := range r.cluster.nodes {
		nd.mu.Lock()
		small := nd.maxStore != normalStore
		nd.mu.Unlock()
		if small {
			if err := r.cluster.freeDisk(ctx, nd); err != nil {
				return fmt.Errorf("restore: node %s: %w", nd.name, err)
			}
		}
		if !nd.running() {
			if err := nd.start(); err != nil {
				return err
			}
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, nd := range r.cluster.nodes {
		if err := nd.waitHealthy(wctx); err != nil {
			return fmt.Errorf("restore: node %s: %w", nd.name, err)
		}
	}
	for _, w := range r.workers {
		if !w.running() {
			if err := w.start(); err != nil {
				return err
			}
		}
	}
	for _, w := range r.workers {
		if err := w.waitReady(wctx); err != nil {
			return fmt.Errorf("restore: worker %s: %w", w.id, err)
		}
	}
	return nil
}

// settle waits, up to Config.Settle, until every acknowledged event is in
// its key's log, every key is settled and every acknowledged poison event
// is a dead letter; it returns the states and dead letters last read.
func (r *run) settle(ctx context.Context, nc *nats.Conn, c *client.Client, pubs []Publish) (map[string]contract.StateRecord, []DeadLetter, bool) {
	deadline := time.Now().Add(r.cfg.Settle)
	var states map[string]contract.StateRecord
	var dls []DeadLetter
	for {
		var err error
		states, err = readStates(ctx, nc)
		if err == nil {
			dls, err = readDeadLetters(ctx, c)
		}
		if err == nil {
			missing, unsettled, unlettered := pendingWork(pubs, states, dls)
			if missing+unsettled+unlettered == 0 {
				return states, dls, true
			}
			if time.Now().After(deadline) {
				r.logf("settle: %d acknowledged events not applied, %d keys unsettled, %d poison events not dead-lettered", missing, unsettled, unlettered)
				return states, dls, false
			}
		} else {
			r.logf("settle: %v", err)
			if time.Now().After(deadline) {
				return states, dls, false
			}
		}
		if !sleepCtx(ctx, time.Second) {
			return states, dls, false
		}
	}
}

// pendingWork counts what has not settled yet.
func pendingWork(pubs []Publish, states map[string]contract.StateRecord, dls []DeadLetter) (missing, unsettled, unlettered int) {
	type event struct {
		key    string
		p, seq int
	}
	applied := map[event]bool{}
	for key, rec := range states {
		var d Data
		if err := json.Unmarshal(rec.Data, &d); err == nil {
			for _, e := range d.Log {
				if e.Kind == EntryAdd || e.Kind == EntryWork {
					applied[event{key, e.Producer, e.Seq}] = true
				}
			}
		}
		if rec.State != string(Ready) || len(rec.Pending) > 0 {
			unsettled++
		}
	}
	lettered := map[string]bool{}
	for _, dl := range dls {
		lettered[dl.JobID] = true
	}
	for _, p := range pubs {
		switch {
		case !p.Acked:
		case p.valid() && !applied[event{p.Key, p.Producer, p.Seq}]:
			missing++
		case !p.valid() && !lettered[p.Job]:
			unlettered++
		}
	}
	return missing, unsettled, unlettered
}

// readStates reads every key's state from the state bucket.
func readStates(ctx context.Context, nc *nats.Conn) (map[string]contract.StateRecord, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(rctx, contract.StateBucket(Workflow))
	if err != nil {
		return nil, fmt.Errorf("state bucket: %w", err)
	}
	wch, err := kv.WatchAll(rctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("state bucket: %w", err)
	}
	defer func() { _ = wch.Stop() }()
	out := map[string]contract.StateRecord{}
	for {
		select {
		case e := <-wch.Updates():
			if e == nil {
				return out, nil // the values there were at the start
			}
			rec, err := contract.DecodeState(e.Value())
			if err != nil {
				return nil, fmt.Errorf("state of %s: %w", e.Key(), err)
			}
			out[e.Key()] = rec
		case <-rctx.Done():
			return nil, fmt.Errorf("state bucket: read %d keys: %w", len(out), rctx.Err())
		}
	}
}

func readDeadLetters(ctx context.Context, c *client.Client) ([]DeadLetter, error) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	dls, err := c.DeadLetters(rctx, Workflow, 0)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	out := make([]DeadLetter, len(dls))
	for i, d := range dls {
		out[i] = DeadLetter{Key: d.Key, JobID: d.JobID, Reason: d.Reason}
	}
	return out, nil
}

// teardown stops every worker (SIGTERM, then SIGKILL), every node and
// every proxy.
func (r *run) teardown() {
	var wg sync.WaitGroup
	for _, w := range r.workers {
		w.held.Store(true)
		wg.Go(func() { w.stop(syscall.SIGTERM, shutdownTimeout+10*time.Second) })
	}
	wg.Wait()
	for _, p := range r.proxies {
		p.Close()
	}
	if r.cluster != nil {
		for _, nd := range r.cluster.nodes {
			nd.held.Store(true)
			wg.Go(func() { nd.stop(syscall.SIGTERM, 10*time.Second) })
		}
		wg.Wait()
	}
}

func saveHistory(path string, h *History) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := json.NewEncoder(f).Encode(h); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// LoadHistory reads a history a run saved (history.json in its directory).
func LoadHistory(path string) (*History, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var h History
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &h, nil
}

// readHistories reads the stored statuses of every key in states, a few
// keys at a time; client.ErrNoHistory if the workflow keeps none.
func (r *run) readHistories(ctx context.Context, c *client.Client, states map[string]contract.StateRecord) ([]contract.Status, error) {
	start := time.Now()
	keys := make(chan string)
	var (
		mu    sync.Mutex
		out   []contract.Status
		first error
		wg    sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for key := range keys {
				var sts []contract.Status
				var err error
				// A stream that lost its leader in the last fault answers
				// nothing for a moment: try again, a few times.
				for wait := 250 * time.Millisecond; ; wait *= 2 {
					hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					sts, err = c.History(hctx, Workflow, key)
					cancel()
					if err == nil || errors.Is(err, client.ErrNoHistory) || wait > 4*time.Second || !sleepCtx(ctx, wait) {
						break
					}
				}
				mu.Lock()
				if err != nil && first == nil {
					first = fmt.Errorf("history of %s: %w", key, err)
				}
				out = append(out, sts...)
				mu.Unlock()
			}
		})
	}
	for key := range states {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		keys <- key
	}
	close(keys)
	wg.Wait()
	r.logf("status history: %d statuses of %d keys read in %s", len(out), len(states), time.Since(start).Round(100*time.Millisecond))
	return out, first
}
