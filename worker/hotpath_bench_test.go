package worker

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/statemachine"
)

// Micro-benchmarks of the runtime's per-event hot path, without a broker in
// the timed loop (the events applied are real messages pulled once from an
// embedded server, because a queue.Msg carries its JetStream message):
//
//	go test -run '^$' -bench 'Hot' -benchmem ./worker/

// hotWorkflow is a no-op workflow: its client event makes a transition with
// no action, like e2ebench's.
func hotWorkflow(tb testing.TB) Workflow {
	tb.Helper()
	m, err := statemachine.New(statemachine.Definition[struct{}]{
		Name:    "hot",
		Initial: "ready",
		States:  []statemachine.StateDef{{Name: "ready"}, {Name: "closed", Terminal: true}},
		Events:  []statemachine.EventDef{{Name: "ping", Client: true}, {Name: "close", Client: true}},
		Transitions: []statemachine.Transition[struct{}]{
			{From: "ready", On: "ping", To: "ready"},
			{From: "ready", On: "close", To: "closed"},
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	wf, err := NewWorkflow(m, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return wf
}

const hotBatch = 64 // Config.GroupCommit's default

var (
	hotOnce sync.Once
	hotMsgs []*queue.Msg
	hotErr  error
)

// pulledMsgs returns hotBatch real events of one key, 256 bytes each,
// pulled from an embedded server and never acknowledged. The server lives
// until the benchmark that first asked for them ends; the messages stay
// usable after (they are only read).
func pulledMsgs(b *testing.B) []*queue.Msg {
	b.Helper()
	hotOnce.Do(func() { hotMsgs, hotErr = pull(b) })
	if hotErr != nil {
		b.Fatal(hotErr)
	}
	return hotMsgs
}

func pull(b *testing.B) ([]*queue.Msg, error) {
	srv := natstest.Server(b)
	conn := natstest.Conn(b, srv.ClientURL())
	producer := natstest.Client(b, srv.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := conn.Provision(ctx, queue.Spec{Workflow: "hot", Partitions: 1}); err != nil {
		return nil, err
	}
	const fixed = `{"event":"ping","data":{"p":""}}`
	ev := contract.Envelope{Event: "ping", Data: json.RawMessage(`{"p":"` + strings.Repeat("x", 256-len(fixed)) + `"}`)}
	for i := range hotBatch {
		if _, err := producer.Publish(ctx, "hot", "order-12345", ev, client.WithJobID("job-"+strconv.Itoa(i))); err != nil {
			return nil, err
		}
	}
	var (
		mu   sync.Mutex
		msgs []*queue.Msg
		got  = make(chan struct{})
	)
	p, err := conn.Pull(ctx, queue.PullConfig{Workflow: "hot", Partition: 0, Batch: hotBatch, MaxWait: 100 * time.Millisecond},
		func(_ context.Context, m *queue.Msg) {
			mu.Lock()
			defer mu.Unlock()
			msgs = append(msgs, m)
			if len(msgs) == hotBatch {
				close(got)
			}
		})
	if err != nil {
		return nil, err
	}
	select {
	case <-got:
	case <-ctx.Done():
	}
	if err := p.Stop(ctx); err != nil {
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	if len(msgs) != hotBatch {
		return nil, ctx.Err()
	}
	return msgs, nil
}

// hotActor is a loaded, idle actor of the hot workflow in a flow that is
// not pulling.
func hotActor(b *testing.B) *actor {
	b.Helper()
	w := &Worker{cfg: Config{}.WithDefaults()}
	w.log = *w.cfg.Logger
	w.metrics = newMetrics(w) // route and apply count events
	f := newFlow(w, hotWorkflow(b).e)
	f.spec = w.cfg.Queue.spec(f.name, false)
	ent, err := f.eng.newEntity(nil)
	if err != nil {
		b.Fatal(err)
	}
	a := &actor{key: "order-12345", f: f, loaded: true, rec: contract.StateRecord{State: "ready"}, rev: 1, ent: ent}
	f.actors[a.key] = a
	return a
}

// BenchmarkHotApply applies a batch of events to a copy of an actor's state,
// as process does before it commits: envelope decode, statemachine Apply,
// dedup log and one status per event. n=1 is a key that sees one event at
// a time; n=64 a full group commit. ns/event is the cost per event.
func BenchmarkHotApply(b *testing.B) {
	msgs := pulledMsgs(b)
	for _, n := range []int{1, hotBatch} {
		b.Run("events="+strconv.Itoa(n), func(b *testing.B) {
			a := hotActor(b)
			b.ReportAllocs()
			for b.Loop() {
				bt := a.apply(nil, msgs[:n])
				if len(bt.statuses) != n || !bt.changed {
					b.Fatalf("%d statuses, changed %v", len(bt.statuses), bt.changed)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
		})
	}
}

// BenchmarkHotDispatch routes an event to its key's mailbox, as the
// partition's puller does for each message, with the actor already running
// (so no goroutine is started); the mailbox is emptied when full.
func BenchmarkHotDispatch(b *testing.B) {
	msgs := pulledMsgs(b)
	a := hotActor(b)
	f := a.f
	f.mu.Lock()
	a.running = true // taken for busy: route only queues
	f.mu.Unlock()
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f.route(ctx, msgs[i%len(msgs)])
		if i%f.w.cfg.Mailbox == f.w.cfg.Mailbox-1 {
			f.mu.Lock()
			a.mailbox = a.mailbox[:0]
			f.mu.Unlock()
		}
	}
}

// hotRecord is a key's record after it has handled at least maxApplied
// events: what every commit of a busy key encodes.
func hotRecord(applied int) contract.StateRecord {
	r := contract.StateRecord{
		State: "ready", Version: 1000, Data: json.RawMessage(`{}`),
		UpdatedAt: time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC), Entered: 1,
	}
	for i := range applied {
		noteApplied(&r, uint64(1_000_000+i))
	}
	return r
}

// BenchmarkHotStateEncode encodes a key's state as commit does: the
// entity's data, then the record around it.
func BenchmarkHotStateEncode(b *testing.B) {
	for _, applied := range []int{1, maxApplied} {
		b.Run("applied="+strconv.Itoa(applied), func(b *testing.B) {
			a := hotActor(b)
			rec := hotRecord(applied)
			b.ReportAllocs()
			var size int
			for b.Loop() {
				data, err := a.ent.encode()
				if err != nil {
					b.Fatal(err)
				}
				rec.Data = data
				val, err := contract.MarshalState(&rec)
				if err != nil {
					b.Fatal(err)
				}
				size = len(val)
			}
			b.ReportMetric(float64(size), "bytes/value")
		})
	}
}

// BenchmarkHotStateDecode decodes a key's stored state as load does when an
// actor is activated.
func BenchmarkHotStateDecode(b *testing.B) {
	for _, applied := range []int{1, maxApplied} {
		b.Run("applied="+strconv.Itoa(applied), func(b *testing.B) {
			a := hotActor(b)
			rec := hotRecord(applied)
			val, err := json.Marshal(&rec)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(val)))
			for b.Loop() {
				r, err := contract.DecodeState(val)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := a.f.eng.newEntity(r.Data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
