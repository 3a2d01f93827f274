package soak

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
)

// recorder collects every status published, through a watcher on each
// node, connected to that node only (back to it when it restarts), so that
// a status that reached any node that stays up is received, whichever node
// the worker that published it was connected to. Statuses are core NATS:
// one that no node got, or only one that died at once, is gone (see
// Fault.explains).
type recorder struct {
	mu       sync.Mutex
	seen     map[statusID]bool
	statuses []contract.Status
	nLive    int          // statuses received by the watchers
	stopped  bool         // the watchers are gone: what is added now is not theirs
	dropped  atomic.Int64 // statuses the watchers' connections dropped (slow consumer)

	clients []*client.Client
	subs    []*client.Subscription
	ackSubs []*nats.Subscription

	acks     map[uint64][]Ack // by stream sequence of the events stream
	ackSeen  map[string]bool  // subject and body: each ack once, whichever watcher got it
	ackCount int
}

// Ack is an acknowledgement of a delivered event, as the soak saw it go
// by on its way to the consumer (the $JS.ACK subjects are core NATS).
type Ack struct {
	At        time.Time
	Kind      string // +ACK, -NAK, +TERM, +WPI, ...
	Consumer  string // the partition's consumer
	Delivered uint64 // which delivery of the event it answers
}

// statusID tells statuses apart: the same status received by two watchers
// is one.
type statusID struct {
	key, job, event, code string
	version               uint64
	attempt               int
	at                    int64
}

func idOf(st *contract.Status) statusID {
	id := statusID{key: st.Key, job: st.JobID, event: st.Event, version: st.Version, attempt: st.Attempt, at: st.At.UnixNano()}
	if st.Error != nil {
		id.code = st.Error.Code
	}
	return id
}

func (r *recorder) add(st contract.Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := idOf(&st)
	if r.seen[id] {
		return
	}
	r.seen[id] = true
	r.statuses = append(r.statuses, st)
	if !r.stopped {
		r.nLive++
	}
}

// live is how many statuses the watchers received (the others came from
// the status history at the end).
func (r *recorder) live() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nLive
}

// startRecorder subscribes a watcher at each URL to every status of the
// checking workflow.
func startRecorder(urls []string) (*recorder, error) {
	r := &recorder{seen: map[statusID]bool{}, acks: map[uint64][]Ack{}, ackSeen: map[string]bool{}}
	for i, u := range urls {
		c, err := client.Connect(u, client.Config{},
			nats.Name(fmt.Sprintf("orderly-soak-watcher-%d", i)), nats.DontRandomize(),
			nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				if err == nats.ErrSlowConsumer {
					r.dropped.Add(1)
				}
			}))
		if err != nil {
			r.stop()
			return nil, err
		}
		r.clients = append(r.clients, c)
		sub, err := c.Subscribe(Workflow, "", r.add)
		if err != nil {
			r.stop()
			return nil, err
		}
		r.subs = append(r.subs, sub)
		// Every acknowledgement the workers send, to tell what became of
		// an event that is not in its key's log: acknowledged (by whom,
		// on which delivery), handed back, terminated, or never answered.
		as, err := c.Conn().Subscribe("$JS.ACK.>", r.addAck)
		if err != nil {
			r.stop()
			return nil, err
		}
		_ = as.SetPendingLimits(-1, 256<<20)
		r.ackSubs = append(r.ackSubs, as)
	}
	return r, nil
}

// addAck records an acknowledgement of the events stream's messages:
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>,
// or the form with a domain and an account hash after $JS.ACK.
func (r *recorder) addAck(m *nats.Msg) {
	tokens := strings.Split(m.Subject, ".")
	if len(tokens) >= 11 {
		tokens = append(tokens[:2], tokens[4:]...)
	}
	if len(tokens) < 9 || tokens[2] != contract.EventsStream(Workflow) {
		return
	}
	kind, _, _ := strings.Cut(string(m.Data), " ")
	if kind == "" {
		kind = "+ACK"
	}
	seq, err1 := strconv.ParseUint(tokens[5], 10, 64)
	delivered, err2 := strconv.ParseUint(tokens[4], 10, 64)
	if err1 != nil || err2 != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	id := m.Subject + "|" + kind
	if r.ackSeen[id] {
		return
	}
	r.ackSeen[id] = true
	r.ackCount++
	r.acks[seq] = append(r.acks[seq], Ack{At: time.Now(), Kind: kind, Consumer: tokens[3], Delivered: delivered})
}

// ackLog returns the acknowledgements seen, by stream sequence.
func (r *recorder) ackLog() map[uint64][]Ack {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acks
}

// stop ends the subscriptions; no status is added afterwards.
func (r *recorder) stop() {
	for _, s := range r.subs {
		_ = s.Unsubscribe()
	}
	for _, s := range r.ackSubs {
		_ = s.Unsubscribe()
	}
	r.ackSubs = nil
	for _, c := range r.clients {
		_ = c.Close()
	}
	r.subs, r.clients = nil, nil
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
}

// all returns the statuses received.
func (r *recorder) all() []contract.Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]contract.Status(nil), r.statuses...)
}

// MemorySample is the most memory a worker process was seen to use.
type MemorySample struct {
	Worker string
	Max    int64     // the largest resident set size read from its /metrics, bytes
	At     time.Time // when
	Limit  int64     // its --memory-limit
}

// memWatch reads each running worker's resident set size from its
// /metrics (process_resident_memory_bytes) every second.
type memWatch struct {
	mu  sync.Mutex
	max map[string]MemorySample
}

func (m *memWatch) run(ctx context.Context, workers []*workerProc, limit int64) {
	hc := &http.Client{Timeout: 2 * time.Second}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		for _, w := range workers {
			if !w.running() {
				continue
			}
			rss, err := readRSS(ctx, hc, fmt.Sprintf("http://127.0.0.1:%d/metrics", w.httpPort))
			if err != nil {
				continue
			}
			m.mu.Lock()
			if cur := m.max[w.id]; rss > cur.Max {
				m.max[w.id] = MemorySample{Worker: w.id, Max: rss, At: time.Now(), Limit: limit}
			}
			m.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *memWatch) samples() []MemorySample {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []MemorySample
	for _, s := range m.max {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b MemorySample) int { return strings.Compare(a.Worker, b.Worker) })
	return out
}

func readRSS(ctx context.Context, hc *http.Client, url string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "process_resident_memory_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	return 0, fmt.Errorf("%s: no process_resident_memory_bytes", url)
}
