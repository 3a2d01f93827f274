package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/orderly-dev/orderly/internal/jsapi"
	"github.com/orderly-dev/orderly/internal/ratelog"
)

// DefaultURL is the server a Config with no URLs connects to.
const DefaultURL = "nats://127.0.0.1:4222"

// ErrNoServer means no server answered within the connect timeout.
var ErrNoServer = errors.New("no NATS server reachable")

// Config says how to reach NATS. The zero value connects to DefaultURL without
// authentication.
type Config struct {
	// URLs of the servers (or one comma-separated string). Default: DefaultURL.
	URLs []string
	// Name identifies the connection in the server's monitoring. Default: "orderly".
	Name string

	// User and Password authenticate with a user name and password.
	User, Password string
	// Token authenticates with a bearer token.
	Token string
	// NKeySeedFile is the path of an NKey seed file (a file holding "SU...").
	// The file is read again to sign each connection attempt, but the
	// public key is fixed at Connect.
	NKeySeedFile string
	// CredsFile is the path of a decentralized-auth credentials file (JWT and
	// seed). It is read again on each connection attempt, so a rotated file
	// is used on the next reconnect.
	CredsFile string

	// TLS: CAFile verifies the server; CertFile and KeyFile present a client
	// certificate. Setting any of them turns TLS on.
	CAFile, CertFile, KeyFile string

	// ConnectTimeout bounds the first connection: Dial (and Connect)
	// tries every server, again and again with jittered backoff, until one
	// answers, and fails with an error wrapping ErrNoServer once this much
	// time has passed. Default: 5s. Negative: no bound but ctx. An
	// authentication or TLS error fails at once: a wrong password is not a
	// server that is not up yet.
	ConnectTimeout time.Duration

	// Logger receives connection events. Default: a disabled logger.
	Logger *zerolog.Logger

	// InboxPrefix starts the subjects the connection receives replies and
	// pulled messages on. Default: "_INBOX", the NATS default. A worker
	// whose user may subscribe only to its own prefix sets it (see the
	// "Permissions" in docs/operations.md).
	InboxPrefix string

	// OnError, if set, is also given each asynchronous error the server
	// reports on the connection (after it is logged), on nats.go's callback
	// goroutine: it must not block. A permissions violation (a publish or
	// subscription the user may not make) comes only this way: the server
	// drops the message and says so here. Default: none.
	OnError func(error)
}

func (c Config) withDefaults() Config {
	if len(c.URLs) == 0 {
		c.URLs = []string{DefaultURL}
	}
	if c.Name == "" {
		c.Name = "orderly"
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		l := zerolog.Nop()
		c.Logger = &l
	}
	return c
}

func (c Config) url() string { return strings.Join(c.URLs, ",") }

// dialTimeout bounds one attempt to reach one server (TCP, TLS and the
// NATS handshake), first connection and reconnects alike.
const dialTimeout = 5 * time.Second

// logEvery is the least time between two log lines about the same
// connection trouble (failed attempts, authorization errors).
const logEvery = 15 * time.Second

// Conn is Orderly's JetStream adapter on one NATS connection. It is safe
// for concurrent use.
type Conn struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	owned  bool            // made by Connect: Close closes nc
	closed <-chan struct{} // owned: closed by nc's last callback

	mux  jsapi.ReplyMux // job id claims (jobs.go)
	link link
}

// link follows the connection, so that the requests in flight when it is
// lost end at once: their replies will not come (the server that had them
// is gone, or the connection to it), and a request waiting out its timeout
// after a reconnect that took milliseconds (a NATS node killed under a
// worker) would hold its key up for seconds for nothing. Requests made
// after the loss are sent once the connection is back, and wait as usual.
type link struct {
	mu     sync.Mutex
	epoch  context.Context // ends when the connection is next lost
	cut    context.CancelCauseFunc
	status chan nats.Status
	done   chan struct{} // closed when watch has returned
	stop   sync.Once
}

// errLinkLost ends a request that was in flight when the connection was lost.
var errLinkLost = errors.New("connection to NATS lost with the request in flight")

// watch runs until the status channel is closed (stopLink) or the
// connection is closed for good, starting a new epoch each time the
// connection is lost. Ending with the connection means a Conn whose
// connection its owner closed leaves nothing behind, Closed or not.
func (l *link) watch() {
	defer close(l.done)
	for st := range l.status {
		l.mu.Lock()
		l.cut(errLinkLost)
		if st == nats.CLOSED {
			l.mu.Unlock()
			return
		}
		l.epoch, l.cut = context.WithCancelCause(context.Background())
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.cut(errLinkLost)
	l.mu.Unlock()
}

// linked returns ctx, ended also if the connection is lost before stop is
// called; context.Cause then says errLinkLost.
func (c *Conn) linked(ctx context.Context) (context.Context, context.CancelFunc) {
	c.link.mu.Lock()
	epoch := c.link.epoch
	c.link.mu.Unlock()
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(epoch, func() { cancel(errLinkLost) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

// lost returns errLinkLost if ctx (from linked) ended for it, else err.
func lost(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errLinkLost) {
		return errLinkLost
	}
	return err
}

// session tells the connection's sessions apart: it changes each time the
// connection is lost and made again, and is -1 while it is down. Read
// before and after a request, it says whether the connection was lost in
// between, with no delay (the status events of link come asynchronously).
func (c *Conn) session() int64 {
	if !c.nc.IsConnected() {
		return -1
	}
	return int64(c.nc.Stats().Reconnects)
}

// stopLink stops following the connection and waits until it has stopped.
func (c *Conn) stopLink() {
	c.link.stop.Do(func() {
		c.nc.RemoveStatusListener(c.link.status)
		<-c.link.done
	})
}

// New returns a Conn on nc, an open connection the caller made (with its
// own handlers and options, which New leaves alone). nc stays the
// caller's: Close releases what the Conn made on it and leaves nc open.
func New(nc *nats.Conn) (*Conn, error) {
	if nc == nil {
		return nil, errors.New("queue: nil connection")
	}
	if nc.IsClosed() {
		return nil, fmt.Errorf("queue: %w", nats.ErrConnectionClosed)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("queue: jetstream: %w", err)
	}
	c := &Conn{nc: nc, js: js}
	c.link.epoch, c.link.cut = context.WithCancelCause(context.Background())
	c.link.status = nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	c.link.done = make(chan struct{})
	go c.link.watch()
	return c, nil
}

// Connect dials NATS as Dial does and returns a Conn that owns the
// connection: Close closes it.
func Connect(ctx context.Context, cfg Config) (*Conn, error) {
	nc, closed, err := dial(ctx, cfg)
	if err != nil {
		return nil, err
	}
	c, err := New(nc)
	if err != nil {
		nc.Close()
		<-closed
		return nil, err
	}
	c.owned, c.closed = true, closed
	return c, nil
}

// Dial connects to NATS with Orderly's options and returns the connection,
// which the caller owns. It keeps trying while no server answers (nats.go's
// RetryOnFailedConnect, with jittered backoff), and fails with an error
// wrapping ErrNoServer, naming the URLs, after cfg.ConnectTimeout; it fails
// at once on an authentication or TLS error. Once connected the connection
// reconnects forever, with jittered backoff from 250ms to 5s: after a
// server restart, a network cut, and after an authorization error too (the
// server's credentials changed; they may change back, and a credentials
// file is read again on each attempt). Failed attempts are logged at most
// once per 15s.
func Dial(ctx context.Context, cfg Config) (*nats.Conn, error) {
	nc, _, err := dial(ctx, cfg)
	return nc, err
}

var errConnectTimeout = errors.New("connect timeout")

// dial is Dial; closed is closed once the connection's last callback has
// run.
func dial(ctx context.Context, cfg Config) (nc *nats.Conn, closed <-chan struct{}, err error) {
	cfg = cfg.withDefaults()
	h := &connEvents{
		log:      cfg.Logger.With().Str("component", "nats").Logger(),
		closed:   make(chan struct{}),
		failures: ratelog.Limiter{Every: logEvery},
		failed:   make(chan struct{}, 1),
	}
	opts, err := h.options(cfg)
	if err != nil {
		return nil, nil, err
	}
	url := cfg.url()
	if cfg.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, cfg.ConnectTimeout, errConnectTimeout)
		defer cancel()
	}
	gaveUp := func() error {
		if !errors.Is(context.Cause(ctx), errConnectTimeout) {
			return fmt.Errorf("queue: connect to %s: %w", Redact(url), ctx.Err())
		}
		if last := h.lastFailure(); last != nil {
			return fmt.Errorf("queue: connect to %s: %w within %s: %v", Redact(url), ErrNoServer, cfg.ConnectTimeout, last)
		}
		return fmt.Errorf("queue: connect to %s: %w within %s", Redact(url), ErrNoServer, cfg.ConnectTimeout)
	}
	// With RetryOnFailedConnect this returns once every server has been
	// tried once (each attempt bounded by the dial timeout, which is at
	// most ConnectTimeout), connected or still trying.
	nc, err = nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("queue: connect to %s: %w", Redact(url), err)
	}
	if err := h.waitConnected(ctx, nc); err != nil {
		nc.Close()
		<-h.closed
		if ctx.Err() != nil {
			return nil, nil, gaveUp()
		}
		return nil, nil, fmt.Errorf("queue: connect to %s: %w", Redact(url), err)
	}
	h.log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("connected to NATS")
	return nc, h.closed, nil
}

// waitConnected waits until nc, retrying its first connection, is
// connected; it returns the error of an attempt that a server refused
// (credentials, TLS) at once, and ctx's error when ctx ends first.
func (h *connEvents) waitConnected(ctx context.Context, nc *nats.Conn) error {
	// RECONNECTING comes after each refused attempt, with the refusal in
	// nc.LastError (nats.go reports no other way while it retries the
	// first connection).
	ch := nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.CLOSED)
	defer nc.RemoveStatusListener(ch)
	for {
		if nc.IsConnected() {
			h.connected.Store(true)
			return nil
		}
		if nc.IsClosed() {
			if err := nc.LastError(); err != nil {
				return err
			}
			return nats.ErrConnectionClosed
		}
		for _, err := range []error{nc.LastError(), h.lastFailure()} {
			if err != nil && !unreachable(err) {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-h.failed:
		}
	}
}

// unreachable reports whether a failed first connection means that no
// server answered (worth trying again) rather than that one refused us.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &op) && op.Op == "dial")
}

// Unavailable reports whether err says that the NATS cluster cannot serve
// JetStream requests for now, rather than that a request is wrong: no
// answer in time, no responders, the connection away, no JetStream meta
// leader yet, or too few nodes for the replicas asked for. A cluster that
// is forming, or electing leaders after a node was lost, fails so for a
// few seconds; the request may be tried again.
func Unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, errLinkLost) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return true
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jsClusterIncomplete, jsClusterNoPeers, jsClusterNotActive, jsClusterNotAssigned,
		jsClusterNotAvail, jsClusterNotLeader, jsStreamOffline, jsConsumerOffline:
		return true
	}
	return apiErr.Code == 503 || apiErr.Code == 408
}

// The server's error codes of a cluster that cannot serve for now
// (nats-server's errors.json; jetstream names only some codes).
const (
	jsClusterIncomplete  jetstream.ErrorCode = 10004 // incomplete results
	jsClusterNoPeers     jetstream.ErrorCode = 10005 // no suitable peers for placement
	jsClusterNotActive   jetstream.ErrorCode = 10006 // not in clustered mode yet
	jsClusterNotAssigned jetstream.ErrorCode = 10007
	jsClusterNotAvail    jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	jsClusterNotLeader   jetstream.ErrorCode = 10009
	jsStreamOffline      jetstream.ErrorCode = 10118
	jsConsumerOffline    jetstream.ErrorCode = 10119
)

// authError reports whether err is the server refusing our credentials.
func authError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// connEvents logs a dialed connection's events and keeps what the first
// connection needs to know of them.
type connEvents struct {
	log       zerolog.Logger
	closed    chan struct{} // closed by the last callback
	connected atomic.Bool   // the first connection is made

	downSince atomic.Int64           // unix nanoseconds; 0 while connected
	failures  ratelog.Limiter        // of the lines about failed attempts
	attempts  atomic.Int64           // failed attempts of the first connection
	lastMsg   atomic.Pointer[string] // the kind of the last failed attempt

	mu     sync.Mutex
	last   error         // of the last failed attempt
	failed chan struct{} // a token after each failed attempt
}

func (h *connEvents) lastFailure() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

func (h *connEvents) options(cfg Config) ([]nats.Option, error) {
	log := h.log
	dial := dialTimeout
	if cfg.ConnectTimeout > 0 {
		dial = min(dial, cfg.ConnectTimeout)
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(dial),
		// The first connection is retried like a lost one, until Dial's
		// ConnectTimeout.
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(backoff),
		// nats.go gives up reconnecting for good when a server refuses the
		// same credentials twice; the server's may come back (a rotation
		// rolled back), and the process must stay up to notice.
		nats.IgnoreAuthErrorAbort(),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // closed on purpose
			}
			h.downSince.CompareAndSwap(0, time.Now().UnixNano())
			log.Warn().Err(err).Msg("disconnected from NATS; reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			since := h.downSince.Swap(0)
			ev := log.Info().Str("server", nc.ConnectedUrlRedacted()).Int("failed_attempts_not_logged", h.failures.Reset())
			if since != 0 {
				ev = ev.Dur("down_for", time.Since(time.Unix(0, since)))
			}
			ev.Msg("reconnected to NATS")
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { h.attemptFailed(err) }),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Debug().Msg("NATS connection closed")
			close(h.closed)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if authError(err) {
				h.attemptFailed(err)
				return
			}
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS error")
			if cfg.OnError != nil {
				cfg.OnError(err)
			}
		}),
	}
	if cfg.User != "" || cfg.Password != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	if cfg.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("queue: nkey seed %s: %w", cfg.NKeySeedFile, err)
		}
		opts = append(opts, o)
	}
	if cfg.CredsFile != "" {
		// Reads the file on every connection attempt.
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	return opts, nil
}

// attemptFailed notes and logs a failed connection attempt, at most once
// per logEvery: the server may be away, or refuse us, for minutes.
func (h *connEvents) attemptFailed(err error) {
	first := !h.connected.Load()
	if first {
		h.attempts.Add(1)
		h.mu.Lock()
		h.last = err
		h.mu.Unlock()
		select {
		case h.failed <- struct{}{}:
		default:
		}
	}
	var msg string
	switch {
	case first && unreachable(err):
		msg = "NATS not reachable yet"
	case authError(err):
		msg = "NATS refuses our credentials; retrying with backoff"
	default:
		msg = "cannot reconnect to NATS yet; retrying with backoff"
	}
	// A new kind of failure (the server is back, but refuses us) is news:
	// it is logged at once, whatever the limit held back before it.
	carried := 0
	if prev := h.lastMsg.Swap(&msg); prev != nil && *prev != msg {
		carried = h.failures.Reset()
	}
	ok, held := h.failures.Allow(time.Now())
	if !ok {
		return
	}
	held += carried
	ev := h.log.Warn().Err(err).Int("failed_attempts_not_logged", held)
	if since := h.downSince.Load(); since != 0 {
		ev = ev.Dur("down_for", time.Since(time.Unix(0, since)))
	}
	if first && unreachable(err) {
		ev = ev.Int64("attempt", h.attempts.Load())
	}
	ev.Msg(msg)
}

// Redact hides user names, passwords and tokens embedded in a list of URLs
// (comma-separated), so that they never reach a log or an error.
func Redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				parts[i] = p[:scheme+3] + "[REDACTED]" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// backoff grows from 250ms to 5s with full jitter, so that many replicas do not
// reconnect in step after a server restart.
func backoff(attempts int) time.Duration {
	d := 250 * time.Millisecond << min(attempts, 5)
	d = min(d, 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

// Close releases what the Conn made on its connection. A Conn from Connect
// closes the connection at once, draining nothing, and returns once its
// callbacks have run, so nothing is logged after it; one from New leaves
// the caller's connection open.
func (c *Conn) Close() {
	defer c.stopLink()
	if c.owned {
		c.nc.Close()
		<-c.closed
		return
	}
	_ = c.mux.Close()
	c.js.CleanupPublisher()
}

// Drain closes the connection gently when the Conn owns it (Connect): its
// subscriptions take no new message and their handlers finish those
// delivered, what was published is flushed, and the connection closes. It
// returns once the connection has closed; with an error wrapping
// nats.ErrDrainTimeout if a handler was still busy after nats.go's drain
// timeout (30s). If ctx ends first it closes the connection at once and
// returns an error wrapping ctx.Err(). Either way the connection is closed
// when Drain returns. On a connection the caller owns (New) Drain is Close:
// the caller drains its own connection.
func (c *Conn) Drain(ctx context.Context) error {
	if !c.owned {
		c.Close()
		return nil
	}
	if err := c.nc.Drain(); err != nil {
		c.Close()
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil // closed already: nothing to drain
		}
		return fmt.Errorf("queue: drain: %w", err)
	}
	select {
	case <-c.closed:
		c.stopLink()
		if err := c.nc.LastError(); errors.Is(err, nats.ErrDrainTimeout) {
			return fmt.Errorf("queue: drain: %w", err)
		}
		return nil
	case <-ctx.Done():
		c.Close()
		return fmt.Errorf("queue: drain: %w", ctx.Err())
	}
}

// Connected reports whether the connection is up right now.
func (c *Conn) Connected() bool { return c.nc.IsConnected() }

// Flush waits until the server has processed everything published so far.
func (c *Conn) Flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	return c.nc.FlushWithContext(ctx)
}

// NATS is the connection itself, for a client.Client of the same
// connection (client.New): Close and Drain here close it when it is the
// Conn's own (Connect).
func (c *Conn) NATS() *nats.Conn { return c.nc }

// ServerURL is the (redacted) URL of the server currently connected to.
func (c *Conn) ServerURL() string { return c.nc.ConnectedUrlRedacted() }

// Drain flushes what nc has published and closes it, waiting until it is
// closed or ctx ends: what a process does last before it exits, so that
// the statuses and acknowledgements it sent reach the server.
func Drain(ctx context.Context, nc *nats.Conn) error {
	closed := nc.StatusChanged(nats.CLOSED)
	defer nc.RemoveStatusListener(closed)
	if err := nc.Drain(); err != nil {
		return fmt.Errorf("queue: drain: %w", err)
	}
	for !nc.IsClosed() {
		select {
		case <-closed:
		case <-ctx.Done():
			return fmt.Errorf("queue: drain: %w", ctx.Err())
		}
	}
	return nil
}
