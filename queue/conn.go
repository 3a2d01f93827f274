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

	// ConnectTimeout bounds the first connection: Connect tries every
	// server, again and again with jittered backoff, until one answers, and
	// fails with an error wrapping ErrNoServer once this much time has
	// passed. Default: 5s. Negative: no bound but ctx. An authentication or
	// TLS error fails at once: a wrong password is not a server that is not
	// up yet.
	ConnectTimeout time.Duration

	// Logger receives connection events. Default: a disabled logger.
	Logger *zerolog.Logger

	// InboxPrefix starts the subjects the connection receives replies and
	// pulled messages on. Default: "_INBOX", the NATS default. A worker
	// whose user may subscribe only to its own prefix sets it (see the
	// "Permissions" in docs/operations.md).
	InboxPrefix string
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

// Conn is a connection to NATS with JetStream. It is safe for concurrent use.
type Conn struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	log    zerolog.Logger
	closed chan struct{} // closed by the last connection callback

	downSince atomic.Int64    // unix nanoseconds; 0 while connected
	failures  ratelog.Limiter // of the lines about failed attempts

	mux jsapi.ReplyMux // job id claims (jobs.go)
}

// Connect dials NATS. It keeps trying while no server answers, and fails
// with an error wrapping ErrNoServer, naming the URLs, after
// cfg.ConnectTimeout; it fails at once on an authentication or TLS error.
// Once connected the connection reconnects forever, with jittered backoff
// from 250ms to 5s: after a server restart, a network cut, and after an
// authorization error too (the server's credentials changed; they may
// change back, and a credentials file is read again on each attempt).
// Failed attempts are logged at most once per 15s; DisconnectedSince says
// how long the connection has been down.
func Connect(ctx context.Context, cfg Config) (*Conn, error) {
	cfg = cfg.withDefaults()
	c := &Conn{
		log:      cfg.Logger.With().Str("component", "nats").Logger(),
		closed:   make(chan struct{}),
		failures: ratelog.Limiter{Every: logEvery},
	}
	opts, err := c.options(cfg)
	if err != nil {
		return nil, err
	}
	url := cfg.url()
	if cfg.ConnectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, cfg.ConnectTimeout, errConnectTimeout)
		defer cancel()
	}
	var last error // of the last attempt that ran to its end
	gaveUp := func() error {
		if !errors.Is(context.Cause(ctx), errConnectTimeout) {
			return fmt.Errorf("queue: connect to %s: %w", Redact(url), ctx.Err())
		}
		if last == nil {
			return fmt.Errorf("queue: connect to %s: %w within %s", Redact(url), ErrNoServer, cfg.ConnectTimeout)
		}
		return fmt.Errorf("queue: connect to %s: %w within %s: %v", Redact(url), ErrNoServer, cfg.ConnectTimeout, last)
	}
	for attempt := 1; ; attempt++ {
		nc, err := dial(ctx, url, opts)
		if err == nil {
			js, err := jetstream.New(nc)
			if err != nil {
				nc.Close()
				return nil, fmt.Errorf("queue: jetstream: %w", err)
			}
			c.nc, c.js = nc, js
			c.log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("connected to NATS")
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, gaveUp()
		}
		if !unreachable(err) {
			return nil, fmt.Errorf("queue: connect to %s: %w", Redact(url), err)
		}
		last = err
		wait := backoff(attempt)
		if ok, held := c.failures.Allow(time.Now()); ok {
			c.log.Warn().Err(err).Str("urls", Redact(url)).Int("attempt", attempt).Int("failed_attempts_not_logged", held).
				Dur("retry_in", wait).Msg("NATS not reachable yet")
		}
		select {
		case <-ctx.Done():
			return nil, gaveUp()
		case <-time.After(wait):
		}
	}
}

var errConnectTimeout = errors.New("connect timeout")

// dial is one nats.Connect, given up on when ctx ends.
func dial(ctx context.Context, url string, opts []nats.Option) (*nats.Conn, error) {
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(url, opts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		return r.nc, r.err
	case <-ctx.Done():
		// The attempt ends within dialTimeout; close what it opens.
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, ctx.Err()
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

// authError reports whether err is the server refusing our credentials.
func authError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

func (c *Conn) options(cfg Config) ([]nats.Option, error) {
	log := c.log
	dial := dialTimeout
	if cfg.ConnectTimeout > 0 {
		dial = min(dial, cfg.ConnectTimeout)
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(dial),
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
			c.downSince.CompareAndSwap(0, time.Now().UnixNano())
			log.Warn().Err(err).Msg("disconnected from NATS; reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			since := c.downSince.Swap(0)
			ev := log.Info().Str("server", nc.ConnectedUrlRedacted()).Int("failed_attempts_not_logged", c.failures.Reset())
			if since != 0 {
				ev = ev.Dur("down_for", time.Since(time.Unix(0, since)))
			}
			ev.Msg("reconnected to NATS")
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { c.attemptFailed(err) }),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Debug().Msg("NATS connection closed")
			close(c.closed)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if authError(err) {
				c.attemptFailed(err)
				return
			}
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS error")
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

// attemptFailed logs a failed reconnection attempt, at most once per
// logEvery: the server may refuse us for minutes.
func (c *Conn) attemptFailed(err error) {
	ok, held := c.failures.Allow(time.Now())
	if !ok {
		return
	}
	ev := c.log.Warn().Err(err).Int("failed_attempts_not_logged", held)
	if since := c.downSince.Load(); since != 0 {
		ev = ev.Dur("down_for", time.Since(time.Unix(0, since)))
	}
	if authError(err) {
		ev.Msg("NATS refuses our credentials; retrying with backoff")
		return
	}
	ev.Msg("cannot reconnect to NATS yet; retrying with backoff")
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

// Close drains nothing and closes the connection at once. It returns once
// the connection's callbacks have run, so nothing is logged after it.
func (c *Conn) Close() {
	c.nc.Close()
	<-c.closed
}

// Drain flushes what was published and closes the connection.
func (c *Conn) Drain() error { return c.nc.Drain() }

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

// Closed is closed once the connection is closed for good, by Close or
// Drain (it reconnects forever otherwise).
func (c *Conn) Closed() <-chan struct{} { return c.closed }

// DisconnectedSince is when the connection went down, or the zero time
// while it is up.
func (c *Conn) DisconnectedSince() time.Time {
	if ns := c.downSince.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// NATS is the connection itself, for a client.Client of the same
// connection (client.New): Close and Drain here close it.
func (c *Conn) NATS() *nats.Conn { return c.nc }

// ServerURL is the (redacted) URL of the server currently connected to.
func (c *Conn) ServerURL() string { return c.nc.ConnectedUrlRedacted() }
