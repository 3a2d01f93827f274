// Package worker is Orderly's runtime: it runs workflows (a
// statemachine.Machine paired with the functions that do its actions)
// against NATS JetStream, inside any Go program.
//
// For each workflow a Worker pulls events in bounded batches from every
// partition of the workflow's stream and routes each to the actor of its
// key. The actor applies the key's events in order through the machine,
// commits the new state to the key's KV entry with compare-and-set, only
// then acknowledges the events and publishes a status per change on
// orderly.status.<workflow>.<key>, and hands the actions the transitions
// named to a bounded pool. An action's outcome comes back to the actor as
// the action's success or failure event and goes through the same table. A
// per-state timeout is a durable JetStream message schedule, armed with the
// commit that enters the state, that fires even if no worker runs at the
// time; one armed for an earlier visit of the state is ignored.
//
// # Using it
//
//	m := statemachine.MustNew(def)                    // your Definition[D]
//	wf, err := worker.NewWorkflow(m, map[string]worker.ActionFunc[D]{
//		"charge": func(ctx context.Context, c worker.ActionCall[D]) (any, error) {
//			return gateway.Charge(ctx, c.Data.Amount, c.IdempotencyKey)
//		},
//	})
//	nc, err := nats.Connect(url)                    // yours: the worker does not close it
//	w, err := worker.New(nc, worker.Config{}, wf)   // more workflows may follow
//	err = w.Start(ctx)                              // provisions, then pulls; ctx ending is a hard stop
//	...
//	err = w.Stop(shutdownCtx)                       // stop pulling, finish what is in hand
//
// Config's zero value is the default for every field. Start returns once the
// worker is ready; Ready and Handler (/healthz, /readyz, /metrics) report
// on it, Stats counts its bounded resources, and Stopped is closed once it
// has stopped. An ActionFunc steers its retries with Permanent (give up)
// and RetryAfter (try again after d). Producers use package queue; tests use
// package orderlytest.
//
// # Goroutines and their owners
//
// Every goroutine the worker starts has an owner that ends it and waits for
// it; Stop, or a Start that fails, ends them all, in this order:
//
//	Worker (Start begins them; Stop or a failed Start ends them)
//	├── one ownership loop per workflow (flow.own, in flow.owner): the only
//	│   goroutine that changes the partitions pulled; Stop ends it first
//	│   (w.leaving) and waits for it, then gives the partitions up itself
//	├── one queue.Puller per partition pulled: its Stop, called when the
//	│   partition is released or the worker stops, waits for it and for
//	│   nats.go's goroutine of the pull request in progress
//	├── one goroutine per actor with work (flow.runs): Stop hands the
//	│   mailboxes back, then waits for them
//	├── the action pool's runners and timer goroutine (actionPool.wg):
//	│   actionPool.stop waits for them, ShutdownTimeout at most
//	└── background loops (Worker.bg): the janitor, the server figures probe of
//	    /metrics, stray sweeps and expedite runs; they end with the worker's
//	    context, cancelled last, and Stop waits for them
//
// No mutex is held across a network call (internal/lockcheck checks it):
// what /readyz, /metrics and Stats read never waits for the server.
//
// # The seed's patterns
//
// Orderly is the GenServer patterns of its seed made distributed:
//
//   - Call with cast semantics: a producer's publish returns once JetStream
//     has stored the event; the slow work runs after that, and its progress
//     comes as statuses (queue.Conn.PublishAndWait follows them).
//   - handle_continue: an actor loads its key's state before it handles
//     anything; Start returns only once streams, consumers and buckets are
//     in place.
//   - Pure state machines: transitions are package statemachine's; a
//     rejected event leaves the state as it was and is published, never
//     dropped.
//   - Timeouts: per-state timeouts (above); idle actors passivate on a
//     ticker of their own that traffic cannot starve.
//   - Backpressure, never unbounded queues: a full mailbox stops its
//     partition's pulls; a key with slow work pending takes no new event,
//     so its mailbox fills, and the actions waiting for the pool are
//     bounded by the actors in memory (Config.MaxActors).
//
// # Tracing
//
// With Config.TracerProvider set, the worker traces each event with
// OpenTelemetry in the trace its W3C trace context headers carry (the
// client's Publish sets them from its caller's context): its application,
// commit, the actions it starts, and their outcomes. An ActionFunc's
// context holds the span of its attempt, so calls it makes with an
// instrumented client join the trace. docs/operations.md, "Tracing",
// lists the spans and their attributes.
//
// # GenServer, Task, Agent: which Orderly uses where
//
// A GenServer (a long-lived process with a mailbox, handling one message at
// a time) is each key's actor: it owns the key's state, its mailbox is
// bounded by Config.Mailbox, it activates on the key's first event and
// passivates after Config.ActorIdle, and it is the only writer of its key
// in this worker. Use it when state and ordering matter.
//
// A Task (one goroutine doing one job and producing a result) is each
// action: an ActionFunc runs on the action pool, at most
// Config.Concurrency at once, and its result is fed back to the actor as an
// event. It never touches the key's state, so a slow gateway never blocks
// the key's other bookkeeping. Use it for slow work with a result.
//
// An Agent (plain state behind a lock, get and update, no messages) is
// what the runtime's bookkeeping is: the registry of live actors, the
// in-flight actions, the counters behind Stats, and orderlytest's Clock
// and Spy. Use it for shared state that needs no ordering or lifecycle.
package worker
