package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/orderly-dev/orderly/contract"
)

// Live views are server-sent event streams. Each is bounded: it holds at
// most one overview reading or keyBuffer statuses for its browser; a
// browser that falls further behind loses the view (its EventSource
// reconnects and starts afresh), and one that does not take a write within
// WriteTimeout loses it too. Each ends when its browser goes, and on Close.

// keyBuffer bounds the statuses a key's live view holds for a slow
// browser.
const keyBuffer = 256

// heartbeat is how often an idle view sends a comment, so that a browser
// gone without a word is noticed.
const heartbeat = 15 * time.Second

// sse writes server-sent events to one browser.
type sse struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

// open starts a live view: false (with the answer written) if the console
// is closed or has MaxStreams views open. end must be called when the view
// ends.
func (c *Console) open(w http.ResponseWriter, r *http.Request) (s *sse, ctx context.Context, end func(), ok bool) {
	started, full := c.startStream()
	if !started {
		msg := "the console is shutting down"
		if full {
			msg = fmt.Sprintf("too many live views open (%d, the console's bound); close some and reload", c.cfg.MaxStreams)
		}
		http.Error(w, msg, http.StatusServiceUnavailable)
		return nil, nil, nil, false
	}
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(c.ctx, cancel)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	s = &sse{w: w, rc: http.NewResponseController(w), timeout: c.cfg.WriteTimeout}
	w.WriteHeader(http.StatusOK)
	return s, ctx, func() { stop(); cancel(); c.endStream() }, true
}

// send writes one event; an error ends the view.
func (s *sse) send(event string, data []byte) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, data); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s *sse) comment(text string) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := fmt.Fprintf(s.w, ": %s\n\n", text); err != nil {
		return err
	}
	return s.rc.Flush()
}

// liveOverview streams the overview's readings.
func (c *Console) liveOverview(w http.ResponseWriter, r *http.Request) {
	s, ctx, end, ok := c.open(w, r)
	if !ok {
		return
	}
	defer end()
	readings, unsubscribe := c.hub.subscribe()
	defer unsubscribe()
	if s.comment("overview") != nil {
		return
	}
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case b := <-readings:
			err = s.send("overview", b)
		case <-beat.C:
			err = s.comment("")
		}
		if err != nil {
			return
		}
	}
}

// liveKey streams a key's statuses: first "history", the key's stored
// statuses (an empty list where the history is not available), then each
// new one as "status". It subscribes before it reads the history, and
// skips the live statuses the history already had, so none is missed or
// shown twice at the boundary. It also sends the key's stored record as
// "state" once subscribed, and again after statuses once none is waiting:
// the page's state and data follow the key even where no history covers a
// status published while the page loaded.
func (c *Console) liveKey(w http.ResponseWriter, r *http.Request) {
	wf, key := r.PathValue("wf"), r.PathValue("key")
	flow, ok := c.workflow(wf)
	if !ok {
		http.Error(w, "no workflow "+wf, http.StatusNotFound)
		return
	}
	if err := contract.ValidateKey(key); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s, ctx, end, ok := c.open(w, r)
	if !ok {
		return
	}
	defer end()
	statuses := make(chan contract.Status, keyBuffer)
	overflow := make(chan struct{})
	overflowed := false // the subscription's goroutine's alone
	// A subscription the server refuses fails quietly: nothing would come.
	var refused chan *RefusedError
	if c.cfg.Refusals != nil {
		refused = make(chan *RefusedError, 1)
		subject := contract.StatusSubject(wf, key)
		stop := c.cfg.Refusals.watch(func(e *RefusedError) bool { return e.Subscribe && e.Subject == subject },
			func(e *RefusedError) {
				select {
				case refused <- e:
				default:
				}
			})
		defer stop()
	}
	sub, err := c.cfg.Client.Subscribe(wf, key, func(st contract.Status) {
		if overflowed {
			return
		}
		select {
		case statuses <- st:
		default:
			overflowed = true
			close(overflow)
		}
	})
	if err != nil {
		_ = s.send("problem", jsonString("cannot follow the key's statuses: "+c.explain(err)))
		return
	}
	defer func() { _ = sub.Unsubscribe() }()

	hctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	past, herr := c.history(hctx, wf, key)
	cancel()
	if herr != nil {
		_ = s.send("problem", jsonString(c.explain(herr)))
	}
	b, _ := json.Marshal(past)
	if s.send("history", b) != nil {
		return
	}
	sendState := func() error {
		sctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
		rec, err := c.cfg.Client.State(sctx, wf, key)
		if err != nil {
			return nil // none yet, or unreadable now: the next status tries again
		}
		timers := flow.timers(rec.State)
		if timers == nil {
			timers = []string{}
		}
		b, _ := json.Marshal(keyState{State: rec.State, Version: rec.Version, UpdatedAt: rec.UpdatedAt,
			Data: prettyJSON(rec.Data), Pending: len(rec.Pending), Timers: timers})
		return s.send("state", b)
	}
	if sendState() != nil {
		return
	}
	seen := map[string]bool{}
	for _, st := range past {
		seen[statusID(st)] = true
	}
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case e := <-refused:
			// The stored statuses and the state are shown; say why no new
			// one will be, and keep the view (a reconnect would be refused
			// again).
			err = s.send("problem", jsonString(c.refusal(e)))
			refused = nil
		case <-overflow:
			// Fell behind by keyBuffer statuses: end the view; the browser
			// reconnects and gets the history afresh.
			_ = s.send("problem", jsonString("this view fell behind the key's statuses; reconnecting"))
			return
		case st := <-statuses:
			if len(seen) > 0 {
				if id := statusID(st); seen[id] {
					delete(seen, id)
					continue
				}
			}
			b, _ := json.Marshal(st)
			err = s.send("status", b)
			if err == nil && len(statuses) == 0 {
				err = sendState()
			}
		case <-beat.C:
			err = s.comment("")
		}
		if err != nil {
			return
		}
	}
}

// keyState is the "state" event of a key's live view.
type keyState struct {
	State     string    `json:"state"`
	Version   uint64    `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	Data      string    `json:"data"` // indented, as the page shows it
	Pending   int       `json:"pending"`
	Timers    []string  `json:"timers"` // those of its state
}

// statusID tells statuses apart: the same status read from the history and
// received live has the same one.
func statusID(st contract.Status) string {
	return fmt.Sprintf("%d|%s|%s|%s|%d", st.Version, st.JobID, st.Event, st.At.Format(time.RFC3339Nano), st.Attempt)
}

func jsonString(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}
