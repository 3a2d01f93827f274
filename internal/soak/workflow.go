package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

// Workflow is the name of the checking workflow.
const Workflow = "soak"

// States of a key of the checking workflow.
const (
	Ready statemachine.State = "ready" // no slow work pending
	Busy  statemachine.State = "busy"  // the slow work of a work event is pending
)

// Events of the checking workflow. add and work are the producers'; done
// and failed the outcomes of the slow work.
const (
	EventAdd    statemachine.Event = "add"
	EventWork   statemachine.Event = "work"
	EventDone   statemachine.Event = "done"
	EventFailed statemachine.Event = "failed"
)

// ActionSlow is the slow work a work event starts.
const ActionSlow = "slow"

// Kinds of log entries: one per applied event, so the log's length is the
// key's version.
const (
	EntryAdd    = "a" // an add event
	EntryWork   = "w" // a work event: its slow work starts
	EntryDone   = "d" // the slow work of the work entry before succeeded
	EntryFailed = "f" // it failed for good
)

// Data is what a key of the checking workflow carries: the log of every
// event applied to it, in order. The checker tells lost, doubled and
// reordered events apart from it alone.
type Data struct {
	Log []Entry `json:"log"`
}

// Entry is one applied event.
type Entry struct {
	Kind     string `json:"k"`           // EntryAdd, EntryWork, EntryDone or EntryFailed
	Producer int    `json:"p,omitempty"` // add and work: the producer that sent it
	Seq      int    `json:"n,omitempty"` // add and work: the producer's sequence number for the key
	Job      string `json:"j,omitempty"` // done: the job whose slow work it was
	Worker   string `json:"w"`           // the worker that applied it
	At       int64  `json:"t"`           // when it applied it, Unix milliseconds of the worker's clock
}

// Payload is the data of add and work.
type Payload struct {
	Producer int `json:"p"`
	Seq      int `json:"n"`
}

// slowResult is the data of done.
type slowResult struct {
	Job     string `json:"j"`
	Attempt int    `json:"a"`
}

// Gateway is the slow work's simulated remote service: each call waits
// Latency, then fails with probability FailRate (an error the worker
// retries). The soak changes both while it runs.
type Gateway struct {
	Latency  time.Duration `json:"latency"`
	FailRate float64       `json:"fail_rate"`
}

// MarshalJSON writes Latency as a Go duration string.
func (g Gateway) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Latency  string  `json:"latency"`
		FailRate float64 `json:"fail_rate"`
	}{g.Latency.String(), g.FailRate})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (g *Gateway) UnmarshalJSON(b []byte) error {
	var v struct {
		Latency  string  `json:"latency"`
		FailRate float64 `json:"fail_rate"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	d, err := time.ParseDuration(v.Latency)
	if err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	if d < 0 || !(v.FailRate >= 0 && v.FailRate <= 1) {
		return fmt.Errorf("latency %s, fail rate %v: want a latency >= 0 and a rate in [0,1]", d, v.FailRate)
	}
	*g = Gateway{Latency: d, FailRate: v.FailRate}
	return nil
}

// errSlowFailed is the simulated gateway's failure.
var errSlowFailed = errors.New("simulated gateway failure")

// gatewayFile is a Gateway read from a file, again whenever the file
// changes (the soak rewrites it), so a worker restarted in the middle of a
// fault gets the fault's settings too.
type gatewayFile struct {
	path string
	def  Gateway

	mu      sync.Mutex
	modTime time.Time
	size    int64
	cur     Gateway
	checked time.Time
}

// get returns the settings, reading the file at most every 200ms. A file
// that is missing or unreadable leaves the last settings in place.
func (g *gatewayFile) get() Gateway {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.path == "" {
		return g.def
	}
	now := time.Now()
	if now.Sub(g.checked) < 200*time.Millisecond {
		return g.cur
	}
	g.checked = now
	st, err := os.Stat(g.path)
	if err != nil || st.ModTime().Equal(g.modTime) && st.Size() == g.size {
		return g.cur
	}
	b, err := os.ReadFile(g.path)
	if err != nil {
		return g.cur
	}
	var v Gateway
	if json.Unmarshal(b, &v) == nil {
		g.cur, g.modTime, g.size = v, st.ModTime(), st.Size()
	}
	return g.cur
}

// WorkflowConfig configures the checking workflow in a worker.
type WorkflowConfig struct {
	// Worker is the worker's id, recorded in each log entry it applies.
	Worker string
	// GatewayFile holds the Gateway settings as JSON, read again when it
	// changes. Default: none, Gateway as given.
	GatewayFile string
	// Gateway is the settings until the file says otherwise.
	Gateway Gateway
	// Now is the clock of the log entries. Default: time.Now.
	Now func() time.Time
}

// NewWorkflow returns the checking workflow:
//
//	ready --add-->    ready  (logs it)
//	ready --work-->   busy   (logs it; starts slow)
//	busy  --done-->   ready  (logs it)
//	busy  --failed--> ready  (logs it)
//
// A client event reaching a busy key is refused (invalid_transition): the
// runtime must hold it back until the key's slow work is done, and the
// checker counts such a refusal as an anomaly.
func NewWorkflow(cfg WorkflowConfig) (worker.Workflow, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	gw := &gatewayFile{path: cfg.GatewayFile, def: cfg.Gateway, cur: cfg.Gateway}
	m, err := statemachine.New(definition(cfg))
	if err != nil {
		return worker.Workflow{}, err
	}
	return worker.NewWorkflow(m, map[string]worker.ActionFunc[Data]{
		ActionSlow: func(ctx context.Context, c worker.ActionCall[Data]) (any, error) {
			g := gw.get()
			if g.Latency > 0 {
				t := time.NewTimer(g.Latency)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			if g.FailRate > 0 && rand.Float64() < g.FailRate {
				return nil, errSlowFailed
			}
			return slowResult{Job: c.JobID, Attempt: c.Attempt}, nil
		},
	})
}

func definition(cfg WorkflowConfig) statemachine.Definition[Data] {
	type T = statemachine.Transition[Data]
	entry := func(kind string) func(Data, statemachine.Input) (Data, error) {
		return func(d Data, in statemachine.Input) (Data, error) {
			e := Entry{Kind: kind, Worker: cfg.Worker, At: cfg.Now().UnixMilli()}
			switch kind {
			case EntryAdd, EntryWork:
				var p Payload
				if err := json.Unmarshal(in.Data, &p); err != nil || p.Producer <= 0 || p.Seq <= 0 {
					return d, fmt.Errorf("want {\"p\": producer, \"n\": sequence}, both from 1: %s", in.Data)
				}
				e.Producer, e.Seq = p.Producer, p.Seq
			case EntryDone:
				var r slowResult
				if err := json.Unmarshal(in.Data, &r); err == nil {
					e.Job = r.Job
				}
			}
			// A new slice: the runtime's snapshot of the data shares the old
			// one's array with the actor.
			d.Log = append(d.Log[:len(d.Log):len(d.Log)], e)
			return d, nil
		}
	}
	return statemachine.Definition[Data]{
		Name:    Workflow,
		Initial: Ready,
		States:  []statemachine.StateDef{{Name: Ready}, {Name: Busy}},
		Events: []statemachine.EventDef{
			{Name: EventAdd, Client: true},
			{Name: EventWork, Client: true},
			{Name: EventDone},
			{Name: EventFailed},
		},
		Actions: []statemachine.ActionDef{{Name: ActionSlow, OnSuccess: EventDone, OnFailure: EventFailed}},
		Transitions: []T{
			{From: Ready, On: EventAdd, To: Ready, Update: entry(EntryAdd)},
			{From: Ready, On: EventWork, To: Busy, Update: entry(EntryWork), Actions: []string{ActionSlow}},
			{From: Busy, On: EventDone, To: Ready, Update: entry(EntryDone)},
			{From: Busy, On: EventFailed, To: Ready, Update: entry(EntryFailed)},
		},
	}
}
