package console

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/statemachine"
	"github.com/orderly-dev/orderly/worker"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Runtime is what the console reads from the worker that serves it.
// *worker.Worker is one.
type Runtime interface {
	// ID is the worker's id in its groups.
	ID() string
	// Ready is what /readyz answers.
	Ready() bool
	// Problems are the lines under /readyz's answer.
	Problems() []string
	// Stats are the worker's own figures.
	Stats() worker.Stats
	// Group lists the workflow's replicas and their partitions.
	Group(ctx context.Context, workflow string) ([]worker.Member, error)
}

var _ Runtime = (*worker.Worker)(nil)

// Workflow describes a workflow the console shows.
type Workflow struct {
	// Name is the workflow's name.
	Name string
	// Diagram is its state diagram as Mermaid stateDiagram-v2 text, as
	// statemachine's Machine.Mermaid writes it; drawn as SVG on the
	// overview. Empty: no diagram.
	Diagram string
	// States are its states, in the definition's order: the overview's
	// rows of keys by state.
	States []State
	// Events are the events a client may send: the choices of the key
	// page's form.
	Events []string
}

// State is a state of a Workflow.
type State struct {
	Name     string // The state's name.
	Terminal bool   // No event leaves it.
	// Timers describe the state's timeout and periodic events, as
	// "payment_timeout after 15m0s"; the key page lists them.
	Timers []string
}

// WorkflowOf describes the workflow m defines.
func WorkflowOf[D any](m *statemachine.Machine[D]) Workflow {
	w := Workflow{Name: m.Name(), Diagram: m.Mermaid()}
	for _, s := range m.States() {
		st := State{Name: string(s.Name), Terminal: s.Terminal}
		if s.Timeout != nil {
			st.Timers = append(st.Timers, fmt.Sprintf("%s after %s in the state", s.Timeout.Event, s.Timeout.After))
		}
		for _, p := range s.Every {
			st.Timers = append(st.Timers, fmt.Sprintf("%s every %s in the state", p.Event, p.Interval))
		}
		w.States = append(w.States, st)
	}
	for _, e := range m.Events() {
		if e.Client {
			w.Events = append(w.Events, string(e.Name))
		}
	}
	return w
}

// Config configures the console. Client, Runtime and Workflows are
// required; every other field's zero value is its default.
type Config struct {
	// Client reads the workflows and carries out the write actions. Its
	// NATS user needs the operator role ("Permissions" in
	// docs/operations.md) for all of them: the worker's own role may not
	// send events, read dead letters or follow statuses.
	Client *client.Client
	// Streams, if set, reads the streams' figures (lag, events stored,
	// dead letters waiting): a client on the worker's own connection, whose
	// user may read its streams' information where an operator's may not.
	// Default: Client.
	Streams *client.Client
	// Refusals, if set, learns of the server's refusals on Client's
	// connection (see Refusals): a page then says plainly, and at once,
	// what the console's user may not do. Default: none; such a request
	// fails with a timeout.
	Refusals *Refusals
	// PermissionHelp ends what a page says when the server refused the
	// console's user a permission: how to give the console a user with the
	// operator role. Default: DefaultPermissionHelp.
	PermissionHelp string
	// Runtime is the worker serving the console.
	Runtime Runtime
	// Workflows are the workflows shown, in this order.
	Workflows []Workflow
	// Token, when set, is what every write action (send an event, replay a
	// dead letter, cancel a delayed event, add or remove a schedule) must
	// carry (--console-token). Empty (the default): write actions are
	// allowed only on requests that arrive on a loopback address; the
	// console is read-only to everyone else.
	Token string
	// Refresh is how often the overview's figures are read while a browser
	// shows them. Default: 1s.
	Refresh time.Duration
	// MaxStreams bounds the live views (server-sent event streams) open at
	// once; past it a new one is refused with 503. Default: 32.
	MaxStreams int
	// WriteTimeout bounds each write to a live view: a browser that does
	// not take it in time loses the view (and reconnects). Default: 10s.
	WriteTimeout time.Duration
	// Timeout bounds the reads and actions of one request. Default: 5s.
	Timeout time.Duration
	// Logger logs failures to read; default: none.
	Logger *zerolog.Logger
}

// Defaults of Config.
const (
	DefaultRefresh      = time.Second
	DefaultMaxStreams   = 32
	DefaultWriteTimeout = 10 * time.Second
	DefaultTimeout      = 5 * time.Second
)

// WithDefaults returns c with each zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Refresh == 0 {
		c.Refresh = DefaultRefresh
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.PermissionHelp == "" {
		c.PermissionHelp = DefaultPermissionHelp
	}
	if c.Logger == nil {
		nop := zerolog.Nop()
		c.Logger = &nop
	}
	return c
}

func (c Config) validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("Config.Client is required"))
	}
	if c.Runtime == nil {
		errs = append(errs, errors.New("Config.Runtime is required"))
	}
	if len(c.Workflows) == 0 {
		errs = append(errs, errors.New("Config.Workflows: want at least one"))
	}
	seen := map[string]bool{}
	for _, w := range c.Workflows {
		if err := contract.ValidateWorkflow(w.Name); err != nil {
			errs = append(errs, fmt.Errorf("Config.Workflows: %w", err))
		}
		if seen[w.Name] {
			errs = append(errs, fmt.Errorf("Config.Workflows: %s twice", w.Name))
		}
		seen[w.Name] = true
	}
	if c.Refresh < 0 || c.MaxStreams < 0 || c.WriteTimeout < 0 || c.Timeout < 0 {
		errs = append(errs, errors.New("Config: Refresh, MaxStreams, WriteTimeout and Timeout must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

// Console is the web console: an http.Handler. It owns a goroutine that
// reads the overview's figures while a browser watches them, and the live
// views it serves; Close ends them all.
type Console struct {
	cfg   Config
	js    jetstream.JetStream
	pages map[string]*template.Template
	mux   *http.ServeMux
	csrf  string // the secret every write form carries (csrf.go)

	ctx    context.Context // ends on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the hub and every live view
	mu     sync.Mutex     // guards closed
	closed bool

	streams chan struct{} // a slot per live view open (MaxStreams)
	hub     *hub
}

// New returns a console for cfg. It starts the goroutine that reads the
// overview's figures (idle until a browser watches them); Close stops it.
func New(cfg Config) (*Console, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	streams := cfg.Streams
	if streams == nil {
		streams = cfg.Client
	}
	js, err := jetstream.New(streams.Conn())
	if err != nil {
		return nil, fmt.Errorf("console: jetstream: %w", err)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // never fails (crypto/rand)
	c := &Console{
		cfg: cfg, js: js, pages: pages, csrf: hex.EncodeToString(secret),
		streams: make(chan struct{}, cfg.MaxStreams),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.hub = newHub(c)
	c.mux = c.routes()
	c.wg.Go(func() { c.hub.run(c.ctx) })
	return c, nil
}

// ServeHTTP serves the console's pages, its static files and its live
// views.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Nothing inline runs: a value that escaped its escaping still could
	// not execute.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	c.mux.ServeHTTP(w, r)
}

// Close ends every live view and the overview's reader, and waits for
// them. The console then serves pages still, but no live view. Close is
// safe to call more than once.
func (c *Console) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// startStream takes a slot for a live view and counts it in wg, so that
// Close waits for it; false when the console is closed or full.
func (c *Console) startStream() (ok bool, full bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false, false
	}
	select {
	case c.streams <- struct{}{}:
	default:
		return false, true
	}
	c.wg.Add(1)
	return true, false
}

func (c *Console) endStream() {
	<-c.streams
	c.wg.Done()
}

// timers are the timers of state in w.
func (w Workflow) timers(state string) []string {
	for _, s := range w.States {
		if s.Name == state {
			return s.Timers
		}
	}
	return nil
}

func (c *Console) workflow(name string) (Workflow, bool) {
	i := slices.IndexFunc(c.cfg.Workflows, func(w Workflow) bool { return w.Name == name })
	if i < 0 {
		return Workflow{}, false
	}
	return c.cfg.Workflows[i], true
}

func (c *Console) routes() *http.ServeMux {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", cacheFor(time.Hour, http.FileServerFS(static))))
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/static/favicon.svg", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /{$}", c.overviewPage)
	mux.HandleFunc("GET /w/{wf}/{$}", c.overviewPage)
	mux.HandleFunc("GET /w/{wf}/keys/{$}", c.keysPage)
	mux.HandleFunc("GET /w/{wf}/keys/{key}", c.keyPage)
	mux.HandleFunc("GET /w/{wf}/stuck", c.stuckPage)
	mux.HandleFunc("GET /w/{wf}/dead-letters", c.deadLettersPage)
	mux.HandleFunc("GET /w/{wf}/schedules", c.schedulesPage)
	mux.HandleFunc("GET /live/overview", c.liveOverview)
	mux.HandleFunc("GET /live/w/{wf}/keys/{key}", c.liveKey)
	mux.Handle("POST /w/{wf}/keys/{key}/events", c.write(c.sendEvent))
	mux.Handle("POST /w/{wf}/dead-letters/{seq}/replay", c.write(c.replay))
	mux.Handle("POST /w/{wf}/dead-letters/replay-all", c.write(c.replayAll))
	mux.Handle("POST /w/{wf}/delayed/{id}/cancel", c.write(c.cancelDelayed))
	mux.Handle("POST /w/{wf}/schedules", c.write(c.addSchedule))
	mux.Handle("POST /w/{wf}/schedules/{name}/remove", c.write(c.removeSchedule))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusNotFound, "Not found", "No page of the console is at "+r.URL.Path+".")
	})
	return mux
}

func cacheFor(d time.Duration, h http.Handler) http.Handler {
	v := fmt.Sprintf("public, max-age=%d", int(d.Seconds()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", v)
		h.ServeHTTP(w, r)
	})
}

// reqCtx bounds a request's reads and actions by Config.Timeout.
func (c *Console) reqCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), c.cfg.Timeout)
}
