package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
)

// overview is what the overview page shows, and what its live view sends
// (as JSON) each Refresh. A figure that could not be read is null, and
// Problems says why: nothing is made up.
type overview struct {
	At        time.Time     `json:"at"`
	Worker    workerView    `json:"worker"`
	Workflows []flowFigures `json:"workflows"`
}

type workerView struct {
	ID             string   `json:"id"`
	Ready          bool     `json:"ready"`
	Problems       []string `json:"problems"`
	Actors         int      `json:"actors"`
	Running        int      `json:"running"`
	Queued         int      `json:"queued"`
	InFlight       int      `json:"in_flight"`
	Partitions     int      `json:"partitions"`
	ActionsRunning int      `json:"actions_running"`
	ActionsQueued  int      `json:"actions_queued"`
	ActionsRetry   int      `json:"actions_awaiting_retry"`
	OldestAction   string   `json:"oldest_action"` // "" when none
	DeadLettered   int64    `json:"dead_lettered"`
}

type flowFigures struct {
	Name string `json:"name"`
	// Lag is the events stored and not yet handled, all partitions.
	Lag *uint64 `json:"lag"`
	// QueueLimit is the most events the stream stores (--queue-limit).
	QueueLimit int64 `json:"queue_limit"`
	// Stored counts the events ever stored (the stream's last sequence).
	Stored *uint64 `json:"stored"`
	// InRate and DoneRate are events stored, and handled (acknowledged or
	// dead-lettered), per second over the last few readings; null on the
	// first.
	InRate   *float64 `json:"in_per_s"`
	DoneRate *float64 `json:"done_per_s"`
	// DeadLetters is the number of dead letters stored.
	DeadLetters *uint64 `json:"dead_letters"`
	// States counts the keys in each state, Keys all of them, PendingWork
	// the keys with slow work pending, Scheduled the delayed events
	// waiting: the workflow's inventory, cluster-wide (client.Stats).
	States      map[string]int `json:"states"`
	Keys        *int           `json:"keys"`
	PendingWork *int           `json:"pending_work"`
	Scheduled   *int           `json:"scheduled"`
	// Replicas are the workflow's workers and their partitions.
	Replicas []replica `json:"replicas"`
	// Problems says what could not be read.
	Problems []string `json:"problems"`
}

type replica struct {
	ID         string `json:"id"`
	Partitions []int  `json:"partitions"`
	Self       bool   `json:"self"`
}

// read reads the overview's figures now. prev, if not nil, is the previous
// reading: rates are computed against it.
func (c *Console) read(ctx context.Context, prev *overview) overview {
	st := c.cfg.Runtime.Stats()
	o := overview{
		At: time.Now().UTC(),
		Worker: workerView{
			ID: c.cfg.Runtime.ID(), Ready: c.cfg.Runtime.Ready(), Problems: c.cfg.Runtime.Problems(),
			Actors: st.Actors, Running: st.Running, Queued: st.Queued, InFlight: st.InFlight,
			Partitions: st.Partitions, ActionsRunning: st.ActionsRunning, DeadLettered: st.DeadLettered,
			ActionsQueued: st.ActionsQueued, ActionsRetry: st.ActionsAwaitingRetry,
		},
	}
	if st.OldestAction > 0 {
		o.Worker.OldestAction = st.OldestAction.Round(time.Second).String()
	}
	if o.Worker.Problems == nil {
		o.Worker.Problems = []string{}
	}
	for _, w := range c.cfg.Workflows {
		o.Workflows = append(o.Workflows, c.readFlow(ctx, w.Name))
	}
	if prev != nil {
		for i := range o.Workflows {
			f := &o.Workflows[i]
			if i >= len(prev.Workflows) || prev.Workflows[i].Name != f.Name {
				continue
			}
			p := prev.Workflows[i]
			dt := o.At.Sub(prev.At).Seconds()
			if f.Stored == nil || p.Stored == nil || f.Lag == nil || p.Lag == nil || dt <= 0 || *f.Stored < *p.Stored {
				continue
			}
			in := float64(*f.Stored-*p.Stored) / dt
			done := max(0, (float64(*f.Stored-*p.Stored)-(float64(*f.Lag)-float64(*p.Lag)))/dt)
			f.InRate, f.DoneRate = &in, &done
		}
	}
	return o
}

func (c *Console) readFlow(ctx context.Context, name string) flowFigures {
	f := flowFigures{Name: name, Replicas: []replica{}, Problems: []string{}}
	problem := func(what string, err error) {
		f.Problems = append(f.Problems, fmt.Sprintf("%s: %v", what, err))
		c.cfg.Logger.Debug().Err(err).Str("workflow", name).Msgf("console: %s", what)
	}
	if s, err := c.js.Stream(ctx, contract.EventsStream(name)); err != nil {
		problem("events stream", notProvisioned(err))
	} else {
		info := s.CachedInfo()
		lag, stored := info.State.Msgs, info.State.LastSeq
		f.Lag, f.Stored, f.QueueLimit = &lag, &stored, info.Config.MaxMsgs
	}
	if s, err := c.js.Stream(ctx, contract.DeadLetterStream(name)); err != nil {
		problem("dead letters", notProvisioned(err))
	} else {
		n := s.CachedInfo().State.Msgs
		f.DeadLetters = &n
	}
	if st, err := c.cfg.Client.Stats(ctx, name); err != nil {
		problem("keys by state", err)
	} else {
		f.States, f.Keys, f.PendingWork, f.Scheduled = st.States, &st.Keys, &st.PendingWork, &st.Scheduled
	}
	if members, err := c.cfg.Runtime.Group(ctx, name); err != nil {
		problem("replicas", err)
	} else {
		for _, m := range members {
			ps := m.Partitions
			if ps == nil {
				ps = []int{}
			}
			f.Replicas = append(f.Replicas, replica{ID: m.ID, Partitions: ps, Self: m.Self})
		}
	}
	return f
}

func notProvisioned(err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return errors.New("not there yet (no worker of this workflow has started)")
	}
	return err
}

// hub reads the overview each Refresh while at least one live view shows
// it, and hands each reading to every such view. A view holds at most one
// reading: one that has not taken the last is handed the newer instead, so
// a slow browser costs no memory.
type hub struct {
	c    *Console
	mu   sync.Mutex
	subs map[chan []byte]struct{}
	wake chan struct{} // (1): a view arrived
}

func newHub(c *Console) *hub {
	return &hub{c: c, subs: map[chan []byte]struct{}{}, wake: make(chan struct{}, 1)}
}

// subscribe returns a channel of readings (JSON) and the function that
// ends the subscription.
func (h *hub) subscribe() (<-chan []byte, func()) {
	ch := make(chan []byte, 1)
	h.mu.Lock()
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
	return ch, func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}
}

func (h *hub) watched() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

func (h *hub) publish(b []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select { // drop the reading not yet taken
		case <-ch:
		default:
		}
		ch <- b // cannot block: emptied above, and only publish sends
	}
}

// rateWindow is how many readings the rates span.
const rateWindow = 5

// run reads and publishes until ctx ends, idle while nobody watches.
func (h *hub) run(ctx context.Context) {
	t := time.NewTicker(h.c.cfg.Refresh)
	defer t.Stop()
	// Rates are taken over the last rateWindow readings, so that a reading
	// made early (for a new view) does not make them jump.
	var past []overview
	for {
		if !h.watched() {
			past = nil
			select {
			case <-ctx.Done():
				return
			case <-h.wake:
				continue
			}
		}
		var base *overview
		if len(past) > 0 {
			base = &past[0]
		}
		rctx, cancel := context.WithTimeout(ctx, h.c.cfg.Timeout)
		o := h.c.read(rctx, base)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if past = append(past, o); len(past) > rateWindow {
			past = past[1:]
		}
		if b, err := json.Marshal(o); err == nil {
			h.publish(b)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.wake: // a new view: give it a reading now
		}
	}
}
