package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/memlimit"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// orderlyWindow caps the Orderly publisher's window: a client.Client allows
// 4,000 asynchronous publishes awaiting their ack by default.
const orderlyWindow = client.DefaultMaxAsyncPending

// idleActorIdle is the ActorIdle of the idle scenario: long enough that no
// actor is passivated before the first measurement, short enough to wait for.
const idleActorIdle = 5 * time.Second

type workKind int

const (
	kindNoop workKind = iota // the client event makes a transition with no action
	kindWork                 // the client event starts one action that sleeps
	// kindOrder is the reference workflow (package order): start_processing
	// starts fetch_order, whose gateway answers at once; settled on the
	// status of its outcome, order_fetched.
	kindOrder
	kindToggle // as kindNoop, but every event changes its key's state
)

// benchData is the workflows' data: none.
type benchData struct{}

// workflow returns the bench workflow called name. noop: ready --ping-->
// ready, settled on its first status. toggle: ready --ping--> set --ping-->
// ready, each event a change of state (what the inventory writes for).
// work: ready --work--> working [sleep], working --done|failed--> ready,
// settled on the status of the outcome.
func workflow(kind workKind, name string, work time.Duration) (worker.Workflow, error) {
	if kind == kindToggle {
		m, err := statemachine.New(statemachine.Definition[benchData]{
			Name:    name,
			Initial: "ready",
			States:  []statemachine.StateDef{{Name: "ready"}, {Name: "set"}, {Name: "closed", Terminal: true}},
			Events:  []statemachine.EventDef{{Name: "ping", Client: true}, {Name: "close", Client: true}},
			Transitions: []statemachine.Transition[benchData]{
				{From: "ready", On: "ping", To: "set"},
				{From: "set", On: "ping", To: "ready"},
				{From: "ready", On: "close", To: "closed"},
			},
		})
		if err != nil {
			return worker.Workflow{}, err
		}
		return worker.NewWorkflow(m, nil)
	}
	if kind == kindNoop {
		m, err := statemachine.New(statemachine.Definition[benchData]{
			Name:    name,
			Initial: "ready",
			// "close" is never sent: a state needs a way out to be valid.
			States: []statemachine.StateDef{{Name: "ready"}, {Name: "closed", Terminal: true}},
			Events: []statemachine.EventDef{{Name: "ping", Client: true}, {Name: "close", Client: true}},
			Transitions: []statemachine.Transition[benchData]{
				{From: "ready", On: "ping", To: "ready"},
				{From: "ready", On: "close", To: "closed"},
			},
		})
		if err != nil {
			return worker.Workflow{}, err
		}
		return worker.NewWorkflow(m, nil)
	}
	m, err := statemachine.New(statemachine.Definition[benchData]{
		Name:    name,
		Initial: "ready",
		States:  []statemachine.StateDef{{Name: "ready"}, {Name: "working"}},
		Events: []statemachine.EventDef{
			{Name: "work", Client: true}, {Name: "done"}, {Name: "failed"},
		},
		Actions: []statemachine.ActionDef{{Name: "sleep", OnSuccess: "done", OnFailure: "failed"}},
		Transitions: []statemachine.Transition[benchData]{
			{From: "ready", On: "work", To: "working", Actions: []string{"sleep"}},
			{From: "working", On: "done", To: "ready"},
			{From: "working", On: "failed", To: "ready"},
		},
	})
	if err != nil {
		return worker.Workflow{}, err
	}
	return worker.NewWorkflow(m, map[string]worker.ActionFunc[benchData]{
		"sleep": func(ctx context.Context, _ worker.ActionCall[benchData]) (any, error) {
			t := time.NewTimer(work)
			defer t.Stop()
			select {
			case <-t.C:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
	})
}

// envelope returns the event, its body padded to size bytes.
func envelope(event string, size int) (contract.Envelope, error) {
	fixed := len(`{"event":"","data":{"p":""}}`) + len(event)
	if size < fixed {
		return contract.Envelope{}, fmt.Errorf("-size %d: an event body takes at least %d bytes", size, fixed)
	}
	ev := contract.Envelope{Event: event, Data: json.RawMessage(`{"p":"` + strings.Repeat("x", size-fixed) + `"}`)}
	if b, _ := json.Marshal(ev); len(b) != size {
		return contract.Envelope{}, fmt.Errorf("event body is %d bytes, want %d", len(b), size)
	}
	return ev, nil
}

type orderlyRun struct {
	kind workKind
	// name is the workflow's name, fresh for each run, and its job ids'
	// prefix (kindOrder: the workflow is order's, its streams deleted after
	// each run).
	name     string
	events   int
	keys     int
	distinct bool // key i for event i (keys == events)
	rate     int  // 0: as fast as it goes; else paced
	// work is the action's work (kindWork); 0: -work.
	work time.Duration
	// memoryLimit is the worker's Config.MemoryLimit; when set, the Go
	// runtime's soft limit is set from it too, as the worker command does.
	memoryLimit int64
	// actorIdle and after, set by the idle scenario: the worker's ActorIdle,
	// and what to do once every event is settled, before the worker stops.
	actorIdle time.Duration
	after     func(ctx context.Context, w *worker.Worker) error
	// historyPerKey is the worker's Config.Queue.HistoryPerKey (0: its
	// default; worker.NoHistory: none), set by the history and features
	// scenarios.
	historyPerKey int64
	// noInventory turns the inventory off for this run (the features
	// scenario), as -inventory=false does for all.
	noInventory bool
	// givenIDs publishes each event's job id as one given to publish again
	// (client.WithJobID: looked up by the producer, claimed by the worker),
	// not as made for one publish (WithMadeJobID), the default.
	givenIDs bool
	// resumeAfter is the worker's ResumeAfter (0: its default), and with
	// drain the run ends only once every resume wake-up is gone from the
	// timers stream and the events stream is empty: the wake-ups' cost is
	// then in the CPU per event (the wakeups scenario).
	resumeAfter time.Duration
	drain       bool
}

// jobID is the option giving event i of a run its job id: made for this one
// publish, as a producer that gives none gets, or given (see givenIDs).
func jobID(prefix string, i int, given bool) client.PublishOption {
	if given {
		return client.WithJobID(prefix + strconv.Itoa(i))
	}
	return client.WithMadeJobID(prefix + strconv.Itoa(i))
}

type pendingFuture struct{ p *client.PendingPublish }

func (f pendingFuture) wait(ctx context.Context) error { _, err := f.p.Wait(ctx); return err }

// orderly measures one run of Orderly end to end: events published on one
// connection (windowed, or paced) with known job ids, a worker on another
// connection, and their settled statuses received on a third; done is when
// the settled status of the event's job arrives.
func (b *bench) orderly(ctx context.Context, run orderlyRun) (r result, err error) {
	cfg := b.cfg
	kindEvent := map[workKind]string{kindNoop: "ping", kindWork: "work", kindOrder: string(order.StartProcessing), kindToggle: "ping"}[run.kind]
	ev, err := envelope(kindEvent, cfg.size)
	if err != nil {
		return r, err
	}
	work := cfg.work
	if run.work > 0 {
		work = run.work
	}
	wfName := run.name
	var wf worker.Workflow
	if run.kind == kindOrder {
		wfName = order.Workflow
		wf, err = order.NewWorkflow(order.Config{}, order.NewSimGateway(order.SimConfig{}))
	} else {
		wf, err = workflow(run.kind, run.name, work)
	}
	if err != nil {
		return r, err
	}
	wconn, err := queue.Dial(ctx, queue.Config{URLs: []string{b.url}, Name: "e2ebench-worker"})
	if err != nil {
		return r, err
	}
	defer wconn.Close()
	connect := func(role string) (*client.Client, error) {
		return client.Connect(b.url, client.Config{}, nats.Name("e2ebench-"+role))
	}
	pconn, err := connect("publisher")
	if err != nil {
		return r, err
	}
	defer pconn.Close()
	sconn, err := connect("status")
	if err != nil {
		return r, err
	}
	defer sconn.Close()

	if run.memoryLimit > 0 {
		if soft, ok := memlimit.SetSoft(run.memoryLimit, os.Getenv); ok {
			defer debug.SetMemoryLimit(soft.Previous)
		}
	}
	historyPerKey := run.historyPerKey
	if historyPerKey == 0 && cfg.noHistory {
		// -history=false for the runs whose scenario does not set it.
		historyPerKey = worker.NoHistory
	}
	w, err := worker.New(wconn, worker.Config{
		Concurrency: cfg.concurrency,
		MaxActors:   cfg.maxActors,
		Queue:       worker.QueueConfig{Partitions: cfg.partitions, HistoryPerKey: historyPerKey},
		ActorIdle:   run.actorIdle,
		MemoryLimit: run.memoryLimit,
		// -inventory=false for every run; the features scenario's runs
		// without it.
		DisableInventory: cfg.noInventory || run.noInventory,
		ResumeAfter:      run.resumeAfter,
	}, wf)
	if err != nil {
		return r, err
	}
	if err := w.Start(ctx); err != nil {
		return r, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if serr := w.Stop(sctx); serr != nil && err == nil {
			err = fmt.Errorf("stop worker: %w", serr)
		}
		if derr := b.deleteStreams(ctx, wfName); derr != nil && err == nil {
			err = derr
		}
	}()

	n := run.events
	c := newClock()
	doneAt := make([]atomic.Int64, n)
	var sendAt, ackAt []int64
	if run.rate > 0 {
		sendAt, ackAt = make([]int64, n), make([]int64, n)
	}
	prefix := run.name + "-"
	var (
		settled, failed atomic.Int64
		lastNS          atomic.Int64
		firstErr        atomic.Pointer[contract.StatusError]
		done            = make(chan struct{})
	)
	sub, err := sconn.Subscribe(wfName, "", func(st contract.Status) {
		if !st.Settled {
			return
		}
		s, ok := strings.CutPrefix(st.JobID, prefix)
		if !ok {
			return
		}
		i, err := strconv.Atoi(s)
		if err != nil || i < 0 || i >= n {
			return
		}
		now := c.now()
		if !doneAt[i].CompareAndSwap(0, now) {
			return // a second settled status of one job: not counted twice
		}
		if st.Error != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, st.Error)
		}
		if settled.Add(1) == int64(n) {
			lastNS.Store(now)
			close(done)
		}
	})
	if err != nil {
		return r, err
	}
	defer func() { _ = sub.Unsubscribe() }()

	// Peak live actors, Go heap and goroutines, sampled.
	var (
		peakActors atomic.Int64
		peakGoHeap atomic.Uint64
		peakG      atomic.Int64
		peakLive   atomic.Uint64
		peakStacks atomic.Uint64
		sampling   sync.WaitGroup
		stopSample = make(chan struct{})
	)
	heap := peakHeap{path: cfg.heapProfile}
	sampling.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			peakActors.Store(max(peakActors.Load(), int64(w.Stats().Actors)))
			peakGoHeap.Store(max(peakGoHeap.Load(), heapObjects()))
			peakG.Store(max(peakG.Load(), int64(runtime.NumGoroutine())))
			live, stacks := goMemory()
			peakLive.Store(max(peakLive.Load(), live))
			peakStacks.Store(max(peakStacks.Load(), stacks))
			heap.sample()
			select {
			case <-stopSample:
				return
			case <-t.C:
			}
		}
	})
	stopSampling := sync.OnceFunc(func() { close(stopSample); sampling.Wait() })
	defer stopSampling()
	defer func() {
		if herr := heap.write(); herr != nil && err == nil {
			err = herr
		}
	}()

	resetPeakRSS()
	b.srv.resetPeak()
	pub := func(i int) (ackWaiter, error) {
		var key string
		if run.distinct {
			key = "m" + strconv.Itoa(i)
		} else {
			key = "k" + strconv.Itoa(i%run.keys)
		}
		p, err := pconn.PublishAsync(wfName, key, ev, jobID(prefix, i, run.givenIDs))
		if err != nil {
			return nil, err
		}
		return pendingFuture{p}, nil
	}
	cpu0, alloc0 := b.markCPU(), allocated()
	start := c.now()
	switch {
	case run.rate > 0 && cfg.producer == "process":
		r.rate, err = b.produceInProcess(ctx, c, produceSpec{
			N: n, Rate: run.rate, Size: cfg.size, Workflow: wfName, Event: ev, JobPrefix: prefix, GivenIDs: run.givenIDs,
			Keys: run.keys, Distinct: run.distinct,
		}, sendAt, ackAt)
	case run.rate > 0:
		r.rate, err = publishPaced(ctx, c, n, run.rate, sendAt, ackAt, pub)
	default:
		err = publishWindow(ctx, n, min(cfg.window, orderlyWindow), pub)
	}
	if err != nil {
		return r, err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return r, fmt.Errorf("%d of %d events settled (worker: %+v): %w", settled.Load(), n, w.Stats(), ctx.Err())
	}
	r.elapsed = time.Duration(lastNS.Load() - start)
	r.eps = float64(n) / r.elapsed.Seconds()
	if run.drain {
		if err := b.drain(ctx, wfName); err != nil {
			return r, err
		}
		r.drained = time.Duration(c.now() - lastNS.Load())
	}
	r.cpu, r.serverCPU = b.cpuPerEvent(cpu0, n)
	r.allocs, r.allocBytes = allocated().per(alloc0, n)
	r.rss, r.serverRSS = peakRSS(), b.srv.peakRSS()
	stopSampling()
	r.actors = max(int(peakActors.Load()), w.Stats().Actors)
	r.heap, r.goroutines = peakGoHeap.Load(), int(peakG.Load())
	r.live, r.stacks = peakLive.Load(), peakStacks.Load()
	r.errors = failed.Load()
	if e := firstErr.Load(); e != nil {
		fmt.Printf("  (%s: %d events settled with an error; the first: %s)\n", run.name, r.errors, e)
	}
	if run.rate > 0 {
		at := make([]int64, n)
		for i := range doneAt {
			at[i] = doneAt[i].Load()
		}
		r.ackP50, r.ackP99 = latencies(sendAt, ackAt)
		r.doneP50, r.doneP99 = latencies(sendAt, at)
	}
	if run.after != nil {
		if err := run.after(ctx, w); err != nil {
			return r, err
		}
	}
	return r, nil
}

type idleResult struct {
	actors                   int
	heapLive, heapPassivated uint64
	gLive, gPassivated       int
}

func (r idleResult) String() string {
	if r.actors == 0 {
		return "no live actors measured"
	}
	per := r.perActor()
	gper := float64(r.gLive-r.gPassivated) / float64(r.actors)
	return fmt.Sprintf("%d live idle actors: Go heap %s with them, %s once passivated: %.0f B per idle actor; goroutines %d → %d: %.3f per idle actor",
		r.actors, mib(r.heapLive), mib(r.heapPassivated), per, r.gLive, r.gPassivated, gper)
}

// perActor is the heap an idle actor holds, in bytes.
func (r idleResult) perActor() float64 {
	if r.actors == 0 {
		return 0
	}
	return (float64(r.heapLive) - float64(r.heapPassivated)) / float64(r.actors)
}

// idle measures what an idle actor costs: the live heap and goroutines with
// cfg.keys idle actors, and again once the janitor has passivated them all.
// Both figures cover the whole process; the server's share (the state
// bucket holds the same keys either way) cancels out in the difference.
func (b *bench) idle(ctx context.Context) (idleResult, error) {
	var res idleResult
	measure := func() (uint64, int) {
		time.Sleep(200 * time.Millisecond) // let acks and statuses drain
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc, runtime.NumGoroutine()
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.timeout)
	defer cancel()
	_, err := b.orderly(ctx, orderlyRun{
		kind: kindNoop, name: "idle", events: b.cfg.keys, keys: b.cfg.keys, actorIdle: idleActorIdle,
		after: func(ctx context.Context, w *worker.Worker) error {
			res.heapLive, res.gLive = measure()
			res.actors = w.Stats().Actors
			for w.Stats().Actors > 0 {
				select {
				case <-ctx.Done():
					return errors.New("actors were not passivated in time")
				case <-time.After(100 * time.Millisecond):
				}
			}
			res.heapPassivated, res.gPassivated = measure()
			return nil
		},
	})
	return res, err
}

// drain waits until workflow's timers stream holds no resume wake-up and its
// events stream no event: every wake-up fired and handled, or removed. It
// polls, every 50 ms: this is a measurement's end, not a test's wait.
func (b *bench) drain(ctx context.Context, workflow string) error {
	resume := queue.PendingTimers(workflow, contract.TimerResume)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		timers, err := b.adminJS.Stream(ctx, contract.TimersStream(workflow))
		if err != nil {
			return err
		}
		ti, err := timers.Info(ctx, jetstream.WithSubjectFilter(resume))
		if err != nil {
			return err
		}
		events, err := b.adminJS.Stream(ctx, contract.EventsStream(workflow))
		if err != nil {
			return err
		}
		ei, err := events.Info(ctx)
		if err != nil {
			return err
		}
		left := uint64(0)
		for _, n := range ti.State.Subjects {
			left += n
		}
		if left == 0 && ei.State.Msgs == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain %s: %d resume wake-ups and %d events left: %w", workflow, left, ei.State.Msgs, ctx.Err())
		case <-t.C:
		}
	}
}

// wakeupsResumeAfter is the wakeups scenario's ResumeAfter: a few seconds,
// so that the 0 s gateway's actions end long before their wake-ups are due
// and the run's end waits little for them.
const wakeupsResumeAfter = 3 * time.Second
