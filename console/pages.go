package console

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
)

// page is what every page template gets.
type page struct {
	Title     string
	Workflows []Workflow
	WF        Workflow // the workflow the page is about; zero on the overview of all
	Mode      writeMode
	CSRF      string
	Note      string // the outcome of the last action, from the query
	Body      any    // the page's own data
}

func (p page) ReadOnly() bool  { return p.Mode == writeRefused }
func (p page) NeedToken() bool { return p.Mode == writeToken }

var pageNames = []string{"overview", "key", "keys", "stuck", "deadletters", "schedules", "message"}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"fig":      fig,
		"rate":     rate,
		"time":     fmtTime,
		"ago":      ago,
		"json":     prettyJSON,
		"join":     joinInts,
		"clip":     clip,
		"count":    count,
		"diagram":  diagram,
		"keyURL":   keyURL,
		"pathPart": url.PathEscape,
	}
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// render writes a page; a template that fails writes a plain error instead
// of half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	p.Workflows, p.Mode, p.CSRF = c.cfg.Workflows, c.mode(r), c.csrf
	if q := r.URL.Query(); p.Note == "" && equal(q.Get("sig"), c.sign(q.Get("note"))) {
		p.Note = q.Get("note")
	}
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		c.cfg.Logger.Error().Err(err).Str("page", name).Msg("console: render")
		http.Error(w, "console: cannot render the page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

type message struct{ Heading, Text string }

// fail answers with a page that says what went wrong.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, heading, text string) {
	c.render(w, r, status, "message", page{Title: heading, Body: message{heading, text}})
}

// failAction answers a write action that failed with a page that says
// why: plainly, and with 403, when the server refused the console's user
// the permission.
func (c *Console) failAction(w http.ResponseWriter, r *http.Request, status int, heading string, err error) {
	var e *RefusedError
	if errors.As(err, &e) {
		status = http.StatusForbidden
	}
	c.fail(w, r, status, heading, c.explain(err))
}

func (c *Console) flowOf(w http.ResponseWriter, r *http.Request) (Workflow, bool) {
	name := r.PathValue("wf")
	wf, ok := c.workflow(name)
	if !ok {
		c.fail(w, r, http.StatusNotFound, "No such workflow", fmt.Sprintf("This worker runs no workflow %q.", name))
	}
	return wf, ok
}

// overviewPage: every workflow, or the one in the path.
type overviewBody struct {
	Overview overview
	Flows    []flowView
}

type flowView struct {
	WF      Workflow
	Figures flowFigures
}

func (c *Console) overviewPage(w http.ResponseWriter, r *http.Request) {
	var p page
	flows := c.cfg.Workflows
	if r.PathValue("wf") != "" {
		wf, ok := c.flowOf(w, r)
		if !ok {
			return
		}
		p.WF, flows = wf, []Workflow{wf}
	}
	ctx, cancel := c.reqCtx(r)
	defer cancel()
	o := c.read(ctx, nil)
	body := overviewBody{Overview: o}
	for _, wf := range flows {
		for _, f := range o.Workflows {
			if f.Name == wf.Name {
				body.Flows = append(body.Flows, flowView{WF: wf, Figures: f})
			}
		}
	}
	p.Title, p.Body = "Overview", body
	c.render(w, r, http.StatusOK, "overview", p)
}

// keysPage: look a key up (?key=), or list the keys in a state (?state=,
// with ?older= a duration), oldest first.
func (c *Console) keysPage(w http.ResponseWriter, r *http.Request) {
	wf, ok := c.flowOf(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	if key := strings.TrimSpace(q.Get("key")); key != "" {
		if err := contract.ValidateKey(key); err != nil {
			c.fail(w, r, http.StatusBadRequest, "Not a key", err.Error())
			return
		}
		http.Redirect(w, r, keyURL(wf.Name, key), http.StatusSeeOther)
		return
	}
	b := keysBody{State: q.Get("state"), Older: q.Get("older"), Limit: keyListLimit}
	if b.State != "" {
		query := client.KeysQuery{State: b.State, Limit: keyListLimit}
		if b.Older != "" {
			d, err := time.ParseDuration(b.Older)
			if err != nil {
				c.fail(w, r, http.StatusBadRequest, "Not a duration", "older: "+err.Error())
				return
			}
			query.OlderThan = d
		}
		ctx, cancel := c.reqCtx(r)
		defer cancel()
		err := c.try(ctx, wf.Name, func(ctx context.Context) (err error) {
			b.Keys, err = c.cfg.Client.Keys(ctx, wf.Name, query)
			return err
		})
		if err != nil {
			b.Problem = "Cannot list the keys: " + c.explain(err)
		}
	}
	c.render(w, r, http.StatusOK, "keys", page{Title: "Keys", WF: wf, Body: b})
}

// keyListLimit bounds the keys a list shows.
const keyListLimit = 200

type keysBody struct {
	State, Older string
	Keys         []client.KeyInfo
	Limit        int
	Problem      string
}

// stuckPage lists the keys whose slow work has been pending, or whose
// non-terminal state has not changed, for longer than ?older= (10m).
func (c *Console) stuckPage(w http.ResponseWriter, r *http.Request) {
	wf, ok := c.flowOf(w, r)
	if !ok {
		return
	}
	b := stuckBody{Older: r.URL.Query().Get("older"), Limit: keyListLimit}
	if b.Older == "" {
		b.Older = "10m"
	}
	d, err := time.ParseDuration(b.Older)
	if err != nil || d < 0 {
		c.fail(w, r, http.StatusBadRequest, "Not a duration", "older: want a duration such as 10m")
		return
	}
	ctx, cancel := c.reqCtx(r)
	defer cancel()
	err = c.try(ctx, wf.Name, func(ctx context.Context) (err error) {
		b.Keys, err = c.cfg.Client.Stuck(ctx, wf.Name, d, keyListLimit)
		return err
	})
	if err != nil {
		b.Problem = "Cannot list the stuck keys: " + c.explain(err)
	}
	c.render(w, r, http.StatusOK, "stuck", page{Title: "Stuck keys", WF: wf, Body: b})
}

type stuckBody struct {
	Older   string
	Keys    []client.StuckKey
	Limit   int
	Problem string
}

// keyPage: a key's state, data, pending work, delayed events and timeline.
type keyBody struct {
	Key      string
	Record   *contract.StateRecord
	Problem  string
	Delayed  []client.DelayedEvent
	DelayErr string
	History  []contract.Status
	HistErr  string
	Live     string   // the URL of its live view
	Timers   []string // those of its current state
}

func (c *Console) keyPage(w http.ResponseWriter, r *http.Request) {
	wf, ok := c.flowOf(w, r)
	if !ok {
		return
	}
	key := r.PathValue("key")
	if err := contract.ValidateKey(key); err != nil {
		c.fail(w, r, http.StatusBadRequest, "Not a key", err.Error())
		return
	}
	ctx, cancel := c.reqCtx(r)
	defer cancel()
	b := keyBody{Key: key, Live: "/live/w/" + url.PathEscape(wf.Name) + "/keys/" + url.PathEscape(key)}
	var rec contract.StateRecord
	switch err := c.try(ctx, wf.Name, func(ctx context.Context) (err error) {
		rec, err = c.cfg.Client.State(ctx, wf.Name, key)
		return err
	}); {
	case err == nil:
		b.Record = &rec
		b.Timers = wf.timers(rec.State)
	case errors.Is(err, client.ErrNoState):
		b.Problem = "No state is stored for this key: no event has been applied to it yet."
	default:
		b.Problem = "Cannot read the key's state: " + c.explain(err)
	}
	if err := c.try(ctx, wf.Name, func(ctx context.Context) (err error) {
		b.Delayed, err = c.cfg.Client.DelayedEvents(ctx, wf.Name, key)
		return err
	}); err != nil {
		b.DelayErr = c.explain(err)
	}
	if h, err := c.history(ctx, wf.Name, key); err != nil {
		b.HistErr = c.explain(err)
	} else {
		b.History = h
	}
	c.render(w, r, http.StatusOK, "key", page{Title: key, WF: wf, Body: b})
}

// history is the key's stored statuses, oldest first, at most
// maxTimeline of them (the newest).
func (c *Console) history(ctx context.Context, workflow, key string) ([]contract.Status, error) {
	var h []contract.Status
	err := c.try(ctx, workflow, func(ctx context.Context) (err error) {
		h, err = c.cfg.Client.History(ctx, workflow, key)
		return err
	})
	switch {
	case errors.Is(err, client.ErrNoHistory):
		return []contract.Status{}, errNoHistory
	case err != nil:
		return []contract.Status{}, fmt.Errorf("cannot read the key's status history: %w", err)
	}
	if len(h) > maxTimeline {
		h = h[len(h)-maxTimeline:]
	}
	if h == nil {
		h = []contract.Status{}
	}
	return h, nil
}

// maxTimeline bounds the statuses of a key's timeline a page holds (the
// page's script keeps to the same bound).
const maxTimeline = 1000

var errNoHistory = errors.New("this workflow keeps no status history (its workers run with --history-per-key 0): the timeline shows the statuses published while the page is open")

// deadLettersPage lists the oldest dead letters.
type deadLettersBody struct {
	Letters []client.DeadLetter
	Total   *uint64
	Limit   int
	Problem string
}

const deadLetterPage = 200

func (c *Console) deadLettersPage(w http.ResponseWriter, r *http.Request) {
	wf, ok := c.flowOf(w, r)
	if !ok {
		return
	}
	ctx, cancel := c.reqCtx(r)
	defer cancel()
	b := deadLettersBody{Limit: deadLetterPage}
	if s, err := c.js.Stream(ctx, contract.DeadLetterStream(wf.Name)); err == nil {
		n := s.CachedInfo().State.Msgs
		b.Total = &n
	}
	err := c.try(ctx, wf.Name, func(ctx context.Context) (err error) {
		b.Letters, err = c.cfg.Client.DeadLetters(ctx, wf.Name, deadLetterPage)
		return err
	})
	if err != nil {
		b.Problem = "Cannot list the dead letters: " + c.explain(err)
	}
	c.render(w, r, http.StatusOK, "deadletters", page{Title: "Dead letters", WF: wf, Body: b})
}

// schedulesPage lists the recurring schedules, and a key's delayed events
// (?key=).
type schedulesBody struct {
	Schedules []client.Schedule
	Problem   string
	Key       string
	Delayed   []client.DelayedEvent
	DelayErr  string
}

func (c *Console) schedulesPage(w http.ResponseWriter, r *http.Request) {
	wf, ok := c.flowOf(w, r)
	if !ok {
		return
	}
	ctx, cancel := c.reqCtx(r)
	defer cancel()
	var b schedulesBody
	if err := c.try(ctx, wf.Name, func(ctx context.Context) (err error) {
		b.Schedules, err = c.cfg.Client.Schedules(ctx, wf.Name)
		return err
	}); err != nil {
		b.Problem = "Cannot list the schedules: " + c.explain(err)
	}
	if key := strings.TrimSpace(r.URL.Query().Get("key")); key != "" {
		b.Key = key
		if err := c.try(ctx, wf.Name, func(ctx context.Context) (err error) {
			b.Delayed, err = c.cfg.Client.DelayedEvents(ctx, wf.Name, key)
			return err
		}); err != nil {
			b.DelayErr = c.explain(err)
		}
	}
	c.render(w, r, http.StatusOK, "schedules", page{Title: "Schedules", WF: wf, Body: b})
}

// Write actions. Each answers with a redirect to the page it came from and
// a note that says what happened, or with an error page.

// done redirects to the page the action came from, with a note that says
// what happened. The note is signed, so that a link made elsewhere cannot
// put words of its own in the console's mouth.
func (c *Console) done(w http.ResponseWriter, r *http.Request, to, note string) {
	q := url.Values{"note": {note}, "sig": {c.sign(note)}}
	http.Redirect(w, r, to+"?"+q.Encode(), http.StatusSeeOther)
}

func (c *Console) sign(note string) string {
	m := hmac.New(sha256.New, []byte(c.csrf))
	m.Write([]byte(note))
	return hex.EncodeToString(m.Sum(nil))
}

func (c *Console) sendEvent(w http.ResponseWriter, r *http.Request) {
	wf, ok := c.flowOf(w, r)
	if !ok {
		return
	}
	key := r.PathValue("key")
	ev := contract.Envelope{Event: strings.TrimSpace(r.PostFormValue("event"))}
	if data := strings.TrimSpace(r.PostFormValue("data")); data != "" {
		if !json.Valid([]byte(data)) {
			c.fail(w, r, http.StatusBadRequest, "Not sent: bad data", "The event's data must be JSON (an object, say {\"amount\": 10}), or empty.")
			return
		}
		ev.Data = json.RawMessage(data)
	}
	ctx, cancel := c.reqCtx(r)
	defer cancel()
	var ack client.PubAck
	err := c.try(ctx, wf.Name, func(ctx context.Context) (err error) {
		ack, err = c.cfg.Client.Publish(ctx, wf.Name, key, ev)
		return err
	})
	if err != nil {
		c.failAction(w, r, http.StatusBadRequest, "Not sent", err)
		return
	}
	c.cfg.Logger.Info().Str("workflow", wf.Name).Str("key", key).Str("event", ev.Event).Str("job_id", ack.ID).Msg("console: event sent")
	c.done(w, r, keyURL(wf.Name, key), fmt.Sprintf("Sent %s as job %s.", ev.Event, ack.ID))
}

func (c *Console) replay(w http.ResponseWriter, r *http.Request) {
	wf, ok := c.flowOf(w, r)
	if !ok {
		return
	}
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, "Not replayed", "Not a dead letter's sequence: "+r.PathValue("seq"))
		return
	}
	ctx, cancel := c.reqCtx(r)
	defer cancel()
	var ack client.PubAck
	err = c.try(ctx, wf.Name, func(ctx context.Context) (err error) {
		ack, err = c.cfg.Client.Replay(ctx, wf.Name, seq)
		return err
	})
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, client.ErrNoDeadLetter) {
			status = http.StatusNotFound
		}
		c.failAction(w, r, status, "Not replayed", err)
		return
	}
	c.cfg.Logger.Info().Str("workflow", wf.Name).Uint64("dead_letter", seq).Str("job_id", ack.ID).Msg("console: dead letter replayed")
	c.done(w, r, "/w/"+url.PathEscape(wf.Name)+"/dead-letters", fmt.Sprintf("Replayed dead letter %d as job %s.", seq, ack.ID))
}

func (c *Console) replayAll(w http.ResponseWriter, r *http.Request) {
	wf, ok := c.flowOf(w, r)
	if !ok {
		return
	}
	// Each replay is a request or two; give the whole a bound of its own.
	ctx, cancel := context.WithTimeout(r.Context(), 10*c.cfg.Timeout)
	defer cancel()
	var n int
	err := c.try(ctx, wf.Name, func(ctx context.Context) (err error) {
		n, err = c.cfg.Client.ReplayAll(ctx, wf.Name)
		return err
	})
	c.cfg.Logger.Info().Str("workflow", wf.Name).Int("replayed", n).Err(err).Msg("console: dead letters replayed")
	if err != nil {
		status := http.StatusBadRequest
		if errors.As(err, new(*RefusedError)) {
			status = http.StatusForbidden
		}
		c.fail(w, r, status, "Not all replayed", fmt.Sprintf("Replayed %d dead letters, then: %s", n, c.explain(err)))
		return
	}
	c.done(w, r, "/w/"+url.PathEscape(wf.Name)+"/dead-letters", fmt.Sprintf("Replayed all %d dead letters.", n))
}

func (c *Console) cancelDelayed(w http.ResponseWriter, r *http.Request) {
	wf, ok := c.flowOf(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	ctx, cancel := c.reqCtx(r)
	defer cancel()
	if err := c.try(ctx, wf.Name, func(ctx context.Context) error { return c.cfg.Client.Cancel(ctx, wf.Name, id) }); err != nil {
		c.failAction(w, r, http.StatusConflict, "Not cancelled", err)
		return
	}
	c.cfg.Logger.Info().Str("workflow", wf.Name).Str("job_id", id).Msg("console: delayed event cancelled")
	back := "/w/" + url.PathEscape(wf.Name) + "/schedules"
	if key := r.PostFormValue("key"); contract.ValidateKey(key) == nil {
		back = keyURL(wf.Name, key)
	}
	c.done(w, r, back, "Cancelled delayed event "+id+".")
}

func (c *Console) addSchedule(w http.ResponseWriter, r *http.Request) {
	wf, ok := c.flowOf(w, r)
	if !ok {
		return
	}
	s := client.Schedule{
		Name:     strings.TrimSpace(r.PostFormValue("name")),
		Key:      strings.TrimSpace(r.PostFormValue("key")),
		Event:    strings.TrimSpace(r.PostFormValue("event")),
		Cron:     strings.TrimSpace(r.PostFormValue("cron")),
		TimeZone: strings.TrimSpace(r.PostFormValue("tz")),
	}
	if every := strings.TrimSpace(r.PostFormValue("every")); every != "" {
		d, err := time.ParseDuration(every)
		if err != nil {
			c.fail(w, r, http.StatusBadRequest, "Schedule not added", "Every: "+err.Error())
			return
		}
		s.Every = d
	}
	if data := strings.TrimSpace(r.PostFormValue("data")); data != "" {
		if !json.Valid([]byte(data)) {
			c.fail(w, r, http.StatusBadRequest, "Schedule not added", "The event's data must be JSON, or empty.")
			return
		}
		s.Data = json.RawMessage(data)
	}
	ctx, cancel := c.reqCtx(r)
	defer cancel()
	var got client.Schedule
	err := c.try(ctx, wf.Name, func(ctx context.Context) (err error) {
		got, err = c.cfg.Client.AddSchedule(ctx, wf.Name, s)
		return err
	})
	if err != nil {
		c.failAction(w, r, http.StatusBadRequest, "Schedule not added", err)
		return
	}
	c.cfg.Logger.Info().Str("workflow", wf.Name).Str("schedule", got.Name).Msg("console: schedule added")
	c.done(w, r, "/w/"+url.PathEscape(wf.Name)+"/schedules", "Added schedule "+got.Name+" ("+got.Spec+").")
}

func (c *Console) removeSchedule(w http.ResponseWriter, r *http.Request) {
	wf, ok := c.flowOf(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	ctx, cancel := c.reqCtx(r)
	defer cancel()
	if err := c.try(ctx, wf.Name, func(ctx context.Context) error { return c.cfg.Client.RemoveSchedule(ctx, wf.Name, name) }); err != nil {
		c.failAction(w, r, http.StatusBadRequest, "Schedule not removed", err)
		return
	}
	c.cfg.Logger.Info().Str("workflow", wf.Name).Str("schedule", name).Msg("console: schedule removed")
	c.done(w, r, "/w/"+url.PathEscape(wf.Name)+"/schedules", "Removed schedule "+name+".")
}

// Template helpers.

// fig shows a figure, or "—" for one not known.
func fig(v any) string {
	switch v := v.(type) {
	case *uint64:
		if v == nil {
			return "—"
		}
		return strconv.FormatUint(*v, 10)
	case *int:
		if v == nil {
			return "—"
		}
		return strconv.Itoa(*v)
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case uint64:
		return strconv.FormatUint(v, 10)
	}
	return fmt.Sprint(v)
}

func rate(v *float64) string {
	if v == nil {
		return "—"
	}
	return strconv.FormatFloat(*v, 'f', 1, 64)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05.000Z")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := time.Since(t)
	if d < 0 {
		return "in " + (-d).Round(time.Second).String()
	}
	return d.Round(time.Second).String() + " ago"
}

// prettyJSON indents raw and undoes encoding/json's \u003c-style escapes,
// so that a "<" in the data reads as one; html/template escapes the result
// for the page.
func prettyJSON(raw []byte) string {
	if len(raw) == 0 {
		return ""
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return string(raw)
	}
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	e.SetIndent("", "  ")
	if e.Encode(v) != nil {
		return string(raw)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

// count shows the keys of a state, or "—" when the counts are not known.
func count(states map[string]int, state string) string {
	if states == nil {
		return "—"
	}
	return strconv.Itoa(states[state])
}

// clipAt bounds the bytes of a body shown in a list.
const clipAt = 2048

// clip shows up to clipAt bytes of b, and says how many more there are.
func clip(b []byte) string {
	if len(b) <= clipAt {
		return string(b)
	}
	return fmt.Sprintf("%s… (%d more bytes)", b[:clipAt], len(b)-clipAt)
}

func joinInts(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, " ")
}

// diagram draws a workflow's Mermaid text as SVG; text it cannot read is
// shown as it is.
func diagram(wf Workflow) template.HTML {
	if wf.Diagram == "" {
		return ""
	}
	g, ok := parseMermaid(wf.Diagram)
	if !ok {
		return template.HTML("<pre class=\"mermaid-text\">" + template.HTMLEscapeString(wf.Diagram) + "</pre>")
	}
	return svgOf(g, wf.Name)
}

func keyURL(workflow, key string) string {
	return "/w/" + url.PathEscape(workflow) + "/keys/" + url.PathEscape(key)
}
