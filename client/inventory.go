package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/jsapi"
)

// The inventory: a workflow's keys by state, which its workers keep as
// transitions commit (contract's index.go). Stats counts them, Keys lists
// those of a state, oldest first, and Stuck finds the keys that have not
// moved for a while; each costs what its answer costs, however many keys
// the workflow has. Workflows and Workflow read what the workers say of the
// workflows they run.

var (
	// ErrUnknownWorkflow: no worker has described the workflow (none has
	// run it, or none of a version that describes its workflows).
	ErrUnknownWorkflow = errors.New("unknown workflow")
	// ErrNoInventory: the workflow's workers keep no inventory
	// (worker.Config.DisableInventory, --inventory=false).
	ErrNoInventory = errors.New("the workflow's inventory is turned off")
	// ErrUnknownState: the workflow has no such state; the error says
	// which it has.
	ErrUnknownState = errors.New("unknown state")
)

// Workflows returns the description of every workflow a worker runs or
// ran, by name.
func (c *Client) Workflows(ctx context.Context) ([]contract.WorkflowInfo, error) {
	if c.isDone() {
		return nil, ErrClosed
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	var out []contract.WorkflowInfo
	var bad error
	_, err := jsapi.DirectBatch(ctx, c.nc, &c.mux, "KV_"+contract.WorkflowsBucket, jsapi.DirectRequest{
		MultiLast: []string{"$KV." + contract.WorkflowsBucket + ".*"},
	}, func(sm jsapi.StoredMsg) bool {
		if op := sm.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return true
		}
		var info contract.WorkflowInfo
		if err := json.Unmarshal(sm.Data, &info); err != nil {
			bad = fmt.Errorf("client: workflow %s: %w", contract.KeyOfSubject(sm.Subject), err)
			return false
		}
		out = append(out, info)
		return true
	})
	if errors.Is(err, jsapi.ErrNotProvisioned) {
		return nil, nil // no worker of this version has started
	}
	if err == nil {
		err = bad
	}
	if err != nil {
		return nil, fmt.Errorf("client: workflows: %w", err)
	}
	slices.SortFunc(out, func(a, b contract.WorkflowInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

// Workflow returns the description of workflow; ErrUnknownWorkflow if no
// worker has given one.
func (c *Client) Workflow(ctx context.Context, workflow string) (contract.WorkflowInfo, error) {
	if c.isDone() {
		return contract.WorkflowInfo{}, ErrClosed
	}
	if err := contract.ValidateWorkflow(workflow); err != nil {
		return contract.WorkflowInfo{}, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	m, err := jsapi.GetLastMsgDirect(ctx, c.nc, "KV_"+contract.WorkflowsBucket, "$KV."+contract.WorkflowsBucket+"."+workflow)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound), errors.Is(err, jsapi.ErrNotProvisioned):
		return contract.WorkflowInfo{}, fmt.Errorf("client: workflow %s: %w (has a worker of this version run it?)", workflow, ErrUnknownWorkflow)
	case err != nil:
		return contract.WorkflowInfo{}, fmt.Errorf("client: workflow %s: %w", workflow, err)
	}
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return contract.WorkflowInfo{}, fmt.Errorf("client: workflow %s: %w", workflow, ErrUnknownWorkflow)
	}
	var info contract.WorkflowInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return contract.WorkflowInfo{}, fmt.Errorf("client: workflow %s: %w", workflow, err)
	}
	return info, nil
}

// Stats is a workflow's inventory at a moment: how many keys are in each
// state, how many have slow work pending, how many delayed events wait for
// their time, how many dead letters wait for an operator. The counts are
// exact as of At, read from the inventory's stream (any replica of it: a
// follower may lag the leader by what replication has not carried yet);
// after a worker dies in the middle of a commit, a key may be counted in
// two states until it is repaired (docs/operations.md says when).
type Stats struct {
	// Workflow is the workflow counted.
	Workflow string `json:"workflow"`
	// States counts the keys in each of the workflow's states, every
	// state listed (0 included).
	States map[string]int `json:"states"`
	// Keys is the number of keys with a state: the sum of States.
	Keys int `json:"keys"`
	// PendingWork counts the keys with slow work started and not yet fed
	// back.
	PendingWork int `json:"pending_work"`
	// Scheduled counts the delayed events waiting for their time
	// (enqueue --in/--at), not yet fired.
	Scheduled int `json:"scheduled"`
	// DeadLetters counts the dead letters stored.
	DeadLetters int `json:"dead_letters"`
	// At is when the counts were read.
	At time.Time `json:"at"`
}

// Stats counts workflow's keys by state, and its pending work, delayed
// events and dead letters. Each count is one request, answered from the
// server's index of subjects: what it costs grows with the count, not with
// the stream. ErrUnknownWorkflow if no worker has described workflow,
// ErrNoInventory if its workers keep no inventory.
func (c *Client) Stats(ctx context.Context, workflow string) (Stats, error) {
	info, err := c.inventoryOf(ctx, workflow)
	if err != nil {
		return Stats{}, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	s := Stats{Workflow: workflow, States: make(map[string]int, len(info.States)), At: time.Now().UTC()}
	stream := contract.IndexStream(workflow)
	type count struct {
		into *int
		run  func() (uint64, error)
	}
	counts := []count{
		{&s.PendingWork, func() (uint64, error) {
			return jsapi.DirectCount(ctx, c.nc, &c.mux, stream, contract.IndexWorkSubject(workflow, "*"))
		}},
		{&s.Scheduled, func() (uint64, error) { return c.countScheduled(ctx, workflow) }},
		{&s.DeadLetters, func() (uint64, error) { return c.countDeadLetters(ctx, workflow) }},
	}
	byState := make([]int, len(info.States))
	for i, st := range info.States {
		counts = append(counts, count{&byState[i], func() (uint64, error) {
			return jsapi.DirectCount(ctx, c.nc, &c.mux, stream, contract.IndexStateFilter(workflow, st.Name))
		}})
	}
	// At once: each is a round trip of its own.
	var wg sync.WaitGroup
	errs := make([]error, len(counts))
	for i, ct := range counts {
		wg.Go(func() {
			n, err := ct.run()
			*ct.into, errs[i] = int(n), err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Stats{}, fmt.Errorf("client: stats of %s: %w", workflow, err)
	}
	for i, st := range info.States {
		s.States[st.Name] = byState[i]
		s.Keys += byState[i]
	}
	return s, nil
}

// inventoryOf returns workflow's description, or why it has no inventory.
func (c *Client) inventoryOf(ctx context.Context, workflow string) (contract.WorkflowInfo, error) {
	info, err := c.Workflow(ctx, workflow)
	if err != nil {
		return info, err
	}
	if !info.Inventory {
		return info, fmt.Errorf("client: %s: %w (its workers run with --inventory=false)", workflow, ErrNoInventory)
	}
	return info, nil
}

// countScheduled counts the delayed events of workflow waiting for their
// time: the message schedules of its schedules stream under at.>, through
// a short-lived consumer whose creation says how many it would deliver.
func (c *Client) countScheduled(ctx context.Context, workflow string) (uint64, error) {
	stream := contract.SchedulesStream(workflow)
	cons, err := c.js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{
		FilterSubject:     contract.SchedulesSubject(workflow) + ".at.>",
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: time.Minute, // if we vanish before deleting it
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil // a workflow provisioned before delayed events
	}
	if err != nil {
		return 0, fmt.Errorf("scheduled: %w", err)
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = c.js.DeleteConsumer(dctx, stream, cons.CachedInfo().Name)
	return cons.CachedInfo().NumPending, nil
}

// countDeadLetters counts workflow's dead letters (the stream's info).
func (c *Client) countDeadLetters(ctx context.Context, workflow string) (uint64, error) {
	s, err := c.js.Stream(ctx, contract.DeadLetterStream(workflow))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("dead letters: %w", err)
	}
	return s.CachedInfo().State.Msgs, nil
}

// KeyInfo is a key in the inventory: its state, the version at which it
// entered the state, and when.
type KeyInfo struct {
	Key     string    `json:"key"`     // The key.
	State   string    `json:"state"`   // The state it is in.
	Version uint64    `json:"version"` // Its version when it entered the state.
	Since   time.Time `json:"since"`   // When it entered the state.
}

// KeysQuery says which keys Keys lists.
type KeysQuery struct {
	// State is the state whose keys are listed. Required.
	State string
	// OlderThan, if positive, lists only the keys in State for longer
	// than it.
	OlderThan time.Duration
	// Limit is the most keys listed. Default (0): DefaultKeysLimit; at
	// most MaxKeysLimit.
	Limit int
}

// Limits of KeysQuery.Limit and Stuck's limit.
const (
	DefaultKeysLimit = 100
	MaxKeysLimit     = 10_000
)

// keysBatch is the most entries one direct get asks for.
const keysBatch = 256

// Keys lists the keys of workflow in q.State, oldest first: in the order
// in which they entered the state (as the inventory recorded them; entries
// written by different workers in the same instant may come a moment out
// of order). With q.OlderThan it stops at the first key that entered the
// state less than OlderThan ago. ErrUnknownState if the workflow has no
// state q.State (the error lists those it has).
func (c *Client) Keys(ctx context.Context, workflow string, q KeysQuery) ([]KeyInfo, error) {
	if q.State == "" {
		return nil, fmt.Errorf("client: keys of %s: no state given", workflow)
	}
	if q.OlderThan < 0 {
		return nil, fmt.Errorf("client: keys of %s: OlderThan %s is negative", workflow, q.OlderThan)
	}
	limit, err := keysLimit(q.Limit)
	if err != nil {
		return nil, fmt.Errorf("client: keys of %s: %w", workflow, err)
	}
	info, err := c.inventoryOf(ctx, workflow)
	if err != nil {
		return nil, err
	}
	if !info.HasState(q.State) {
		return nil, fmt.Errorf("client: %s has no state %q: %w (its states: %s)", workflow, q.State, ErrUnknownState, strings.Join(info.StateNames(), ", "))
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	var cutoff time.Time
	if q.OlderThan > 0 {
		cutoff = time.Now().Add(-q.OlderThan)
	}
	var out []KeyInfo
	err = c.eachEntry(ctx, workflow, contract.IndexStateFilter(workflow, q.State), limit, func(sm jsapi.StoredMsg) bool {
		e, err := contract.DecodeIndexEntry(sm.Data)
		if err != nil {
			return true // not an entry of ours: skip it
		}
		if !cutoff.IsZero() && e.Since.After(cutoff) {
			return false
		}
		out = append(out, KeyInfo{Key: e.Key, State: e.State, Version: e.Version, Since: e.Since})
		return len(out) < limit
	})
	if err != nil {
		return nil, fmt.Errorf("client: keys of %s: %w", workflow, err)
	}
	return out, nil
}

func keysLimit(limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultKeysLimit, nil
	case limit < 0:
		return 0, fmt.Errorf("limit %d: must be positive", limit)
	case limit > MaxKeysLimit:
		return 0, fmt.Errorf("limit %d: at most %d", limit, MaxKeysLimit)
	}
	return limit, nil
}

// eachEntry calls fn with the inventory's entries under filter in stream
// order until fn returns false, reading them a batch at a time (at most
// want at once).
func (c *Client) eachEntry(ctx context.Context, workflow, filter string, want int, fn func(jsapi.StoredMsg) bool) error {
	return jsapi.DirectEach(ctx, c.nc, &c.mux, contract.IndexStream(workflow), filter, min(max(want, 1), keysBatch), fn)
}

// StuckKey is a key that has not moved for a while: Reason says why it is
// listed.
type StuckKey struct {
	// KeyInfo is the key, its state and since when; for a key listed for
	// its work alone, read from its state record.
	KeyInfo
	// Reason is StuckWork when its slow work has been pending for longer
	// than asked, else StuckState: it has been in a non-terminal state for
	// longer than asked.
	Reason string `json:"reason"`
	// PendingSince is when the key's slow work began (zero without any).
	PendingSince time.Time `json:"pending_since,omitzero"`
	// Action is the first action pending now (from the key's state).
	Action string `json:"action,omitempty"`
	// Attempt is the attempt of Action running or next to run.
	Attempt int `json:"attempt,omitempty"`
	// LastError is the error of Action's last failed attempt.
	LastError string `json:"last_error,omitempty"`
}

// Reasons of a StuckKey.
const (
	StuckWork  = "work"
	StuckState = "state"
)

// Stuck lists up to limit keys of workflow (0: DefaultKeysLimit) whose slow
// work has been pending, or whose non-terminal state has not changed, for
// longer than olderThan, the longest-waiting first. It reads the oldest
// entries of each non-terminal state and of the pending work, stopping at
// the first that is not old enough, and the state of each key it lists.
func (c *Client) Stuck(ctx context.Context, workflow string, olderThan time.Duration, limit int) ([]StuckKey, error) {
	if olderThan < 0 {
		return nil, fmt.Errorf("client: stuck keys of %s: olderThan %s is negative", workflow, olderThan)
	}
	limit, err := keysLimit(limit)
	if err != nil {
		return nil, fmt.Errorf("client: stuck keys of %s: %w", workflow, err)
	}
	info, err := c.inventoryOf(ctx, workflow)
	if err != nil {
		return nil, err
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	cutoff := time.Now().Add(-olderThan)
	byKey := map[string]*StuckKey{}
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	// The oldest of each list, at once: a key among the limit oldest
	// overall is among the limit oldest of the list that has it.
	for _, st := range info.States {
		if st.Terminal {
			continue
		}
		wg.Go(func() {
			n := 0
			err := c.eachEntry(ctx, workflow, contract.IndexStateFilter(workflow, st.Name), limit, func(sm jsapi.StoredMsg) bool {
				e, err := contract.DecodeIndexEntry(sm.Data)
				if err != nil {
					return true
				}
				if e.Since.After(cutoff) {
					return false
				}
				mu.Lock()
				defer mu.Unlock()
				k := byKey[e.Key]
				if k == nil {
					k = &StuckKey{Reason: StuckState}
					byKey[e.Key] = k
				}
				k.KeyInfo = KeyInfo{Key: e.Key, State: e.State, Version: e.Version, Since: e.Since}
				n++
				return n < limit
			})
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	wg.Go(func() {
		n := 0
		err := c.eachEntry(ctx, workflow, contract.IndexWorkSubject(workflow, "*"), limit, func(sm jsapi.StoredMsg) bool {
			e, err := contract.DecodeWorkEntry(sm.Data)
			if err != nil {
				return true
			}
			if e.Since.After(cutoff) {
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			k := byKey[e.Key]
			if k == nil {
				k = &StuckKey{KeyInfo: KeyInfo{Key: e.Key}}
				byKey[e.Key] = k
			}
			k.Reason, k.PendingSince, k.Action, k.Attempt = StuckWork, e.Since, e.Action, e.Attempt
			n++
			return n < limit
		})
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	})
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("client: stuck keys of %s: %w", workflow, err)
	}
	out := make([]StuckKey, 0, len(byKey))
	for _, k := range byKey {
		out = append(out, *k)
	}
	// Longest waiting first: by the older of its two times.
	slices.SortFunc(out, func(a, b StuckKey) int {
		return cmp.Or(stuckSince(&a).Compare(stuckSince(&b)), cmp.Compare(a.Key, b.Key))
	})
	if len(out) > limit {
		out = out[:limit]
	}
	if err := c.describeStuck(ctx, workflow, out); err != nil {
		return nil, fmt.Errorf("client: stuck keys of %s: %w", workflow, err)
	}
	return out, nil
}

// stuckSince is when a stuck key began to wait.
func stuckSince(k *StuckKey) time.Time {
	if k.Reason == StuckWork && (k.Since.IsZero() || k.PendingSince.Before(k.Since)) {
		return k.PendingSince
	}
	return k.Since
}

// describeParallel bounds the state reads of describeStuck at once.
const describeParallel = 16

// describeStuck fills in each key's pending work from its state record
// (the inventory's work entry names the work that began the wait, the
// record what is pending now), and, for a key listed for its work alone,
// its state and since when.
func (c *Client) describeStuck(ctx context.Context, workflow string, keys []StuckKey) error {
	var wg sync.WaitGroup
	sem := make(chan struct{}, describeParallel)
	errs := make([]error, len(keys))
	for i := range keys {
		k := &keys[i]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			rec, err := c.State(ctx, workflow, k.Key)
			if errors.Is(err, ErrNoState) {
				return
			}
			if err != nil {
				errs[i] = err
				return
			}
			if k.State == "" {
				k.State, k.Version = rec.State, rec.Entered
				m, err := jsapi.GetLastMsgDirect(ctx, c.nc, contract.IndexStream(workflow), contract.IndexStateSubject(workflow, rec.State, k.Key))
				if err == nil {
					if e, err := contract.DecodeIndexEntry(m.Data); err == nil && e.Version == rec.Entered {
						k.Since = e.Since
					}
				}
			}
			if len(rec.Pending) > 0 {
				p := rec.Pending[0]
				k.Action, k.Attempt, k.LastError = p.Action, max(p.Attempt, 1), p.LastError
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
