package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/internal/jsapi"
	"github.com/orderly-dev/orderly/internal/tracing"
)

// Config says how a Client behaves; the zero value is the default for
// every field.
type Config struct {
	// Timeout bounds each request to the server whose context has no
	// deadline (a publish, a job id look-up, a state read, a dead letter
	// read or replay), and how long PublishAsync waits for room when
	// MaxAsyncPending events await their acknowledgement. Default: 5s.
	Timeout time.Duration
	// MaxAsyncPending is the most events sent with PublishAsync that may
	// await their acknowledgement at once. Default: 4000.
	MaxAsyncPending int
	// TracerProvider makes a span (tracing.SpanPublish, "orderly.publish")
	// of each event published, a child of the caller's span, whose trace
	// context the event carries (docs/operations.md, Tracing). Pass
	// otel.GetTracerProvider() for the process's global one. Default: nil,
	// no span of the client's own: the event carries the caller's span
	// (from the context of Publish, or WithTraceContext), if there is one.
	TracerProvider trace.TracerProvider
}

// Defaults of Config.
const (
	DefaultTimeout         = 5 * time.Second
	DefaultMaxAsyncPending = 4000
)

// WithDefaults returns c with each zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxAsyncPending == 0 {
		c.MaxAsyncPending = DefaultMaxAsyncPending
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Timeout < 0:
		return fmt.Errorf("client: Config.Timeout %s: must not be negative", c.Timeout)
	case c.MaxAsyncPending < 0:
		return fmt.Errorf("client: Config.MaxAsyncPending %d: must not be negative", c.MaxAsyncPending)
	}
	return nil
}

// ErrClosed: the Client was closed.
var ErrClosed = errors.New("client closed")

// Client sends events to Orderly's workflows and reads what became of
// them. It is safe for concurrent use. Make one with New, on a connection
// of your own, or with Connect.
type Client struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	cfg    Config
	tracer trace.Tracer // nil: no spans of its own (Config.TracerProvider)

	owned  bool          // Close and Drain close nc (Connect)
	closed chan struct{} // closed once nc is closed, when owned

	mux  jsapi.ReplyMux // PublishAsync's job id look-ups
	look lookups        // their batches still gathering

	mu   sync.Mutex
	done bool
}

// New returns a Client that uses nc, a connection the caller owns: Close
// and Drain release what the Client made on it (its reply subscriptions)
// and leave nc open. nc's permissions must allow what the Client is used
// for; the "producer" and "operator" roles of the README's Permissions
// section are the least that do.
func New(nc *nats.Conn, cfg Config) (*Client, error) {
	if nc == nil {
		return nil, errors.New("client: New with a nil connection")
	}
	if nc.IsClosed() {
		return nil, fmt.Errorf("client: New: %w", nats.ErrConnectionClosed)
	}
	return newClient(nc, cfg)
}

func newClient(nc *nats.Conn, cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(cfg.Timeout),
		jetstream.WithPublishAsyncMaxPending(cfg.MaxAsyncPending))
	if err != nil {
		return nil, fmt.Errorf("client: jetstream: %w", err)
	}
	c := &Client{nc: nc, js: js, cfg: cfg}
	if cfg.TracerProvider != nil {
		c.tracer = cfg.TracerProvider.Tracer(tracing.Scope)
	}
	return c, nil
}

// Connect connects to the NATS servers at url (a comma-separated list, as
// nats.Connect takes it) with opts, and returns a Client that owns the
// connection: Close and Drain close it. The connection is named
// "orderly-client" unless opts name it; everything else is nats.go's
// default unless opts say otherwise (nats.UserInfo, nats.UserCredentials,
// nats.RootCAs, nats.RetryOnFailedConnect, ...).
func Connect(url string, cfg Config, opts ...nats.Option) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	closed := make(chan struct{})
	opts = append([]nats.Option{nats.Name("orderly-client")}, opts...)
	// Last, so that it wraps whatever closed handler opts set.
	opts = append(opts, func(o *nats.Options) error {
		prev := o.ClosedCB
		o.ClosedCB = func(nc *nats.Conn) {
			if prev != nil {
				prev(nc)
			}
			close(closed)
		}
		return nil
	})
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: connect: %w", err)
	}
	c, err := newClient(nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.owned, c.closed = true, closed
	return c, nil
}

// Conn is the Client's connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Close ends the Client at once: events sent with PublishAsync and not yet
// acknowledged fail, and so do later calls (ErrClosed). A Client made by
// Connect closes its connection and returns once the connection's
// callbacks have run; one made by New leaves the connection open. Close is
// safe to call more than once.
func (c *Client) Close() error {
	if !c.markDone() {
		return nil
	}
	c.release()
	if c.owned {
		c.nc.Close()
		<-c.closed
	}
	return nil
}

// Drain ends the Client gently: it waits, until ctx ends, for the
// acknowledgements of events sent with PublishAsync, then closes as Close
// does; a Client made by Connect drains its connection (what it published
// is flushed, its subscriptions finish what they received) and returns
// once it is closed. Later calls fail with ErrClosed.
func (c *Client) Drain(ctx context.Context) error {
	if !c.markDone() {
		return nil
	}
	var err error
	select {
	case <-c.js.PublishAsyncComplete():
	case <-ctx.Done():
		err = fmt.Errorf("client: drain: acknowledgements still awaited: %w", ctx.Err())
	}
	c.release()
	if !c.owned {
		return err
	}
	if derr := c.nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
		c.nc.Close()
		<-c.closed
		return errors.Join(err, fmt.Errorf("client: drain: %w", derr))
	}
	select {
	case <-c.closed:
		return err
	case <-ctx.Done():
		c.nc.Close() // give up draining
		<-c.closed
		return errors.Join(err, fmt.Errorf("client: drain: %w", ctx.Err()))
	}
}

// markDone marks the Client closed; false if it was already.
func (c *Client) markDone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return false
	}
	c.done = true
	return true
}

func (c *Client) isDone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// release undoes what the Client made on its connection.
func (c *Client) release() {
	c.js.CleanupPublisher()
	_ = c.mux.Close()
}

// withTimeout bounds ctx by the Client's Timeout unless it has a deadline.
func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.cfg.Timeout)
}
