package queue

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
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
	NKeySeedFile string
	// CredsFile is the path of a decentralized-auth credentials file (JWT and seed).
	CredsFile string

	// TLS: CAFile verifies the server; CertFile and KeyFile present a client
	// certificate. Setting any of them turns TLS on.
	CAFile, CertFile, KeyFile string

	// ConnectTimeout bounds the first connection, all servers included.
	// Default: 5s. After that the connection reconnects forever, with
	// jittered backoff.
	ConnectTimeout time.Duration

	// Logger receives connection events. Default: a disabled logger.
	Logger *zerolog.Logger
}

func (c Config) withDefaults() Config {
	if len(c.URLs) == 0 {
		c.URLs = []string{DefaultURL}
	}
	if c.Name == "" {
		c.Name = "orderly"
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		l := zerolog.Nop()
		c.Logger = &l
	}
	return c
}

func (c Config) url() string { return strings.Join(c.URLs, ",") }

// Conn is a connection to NATS with JetStream. It is safe for concurrent use.
type Conn struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	log    zerolog.Logger
	closed chan struct{} // closed by the last connection callback
}

// Connect dials NATS. It fails with an error wrapping ErrNoServer, naming the
// URLs, when nothing answers within cfg.ConnectTimeout; once connected it
// reconnects forever.
func Connect(ctx context.Context, cfg Config) (*Conn, error) {
	cfg = cfg.withDefaults()
	log := cfg.Logger.With().Str("component", "nats").Logger()
	closed := make(chan struct{})
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(cfg.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(backoff),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // closed on purpose
			}
			log.Warn().Err(err).Msg("disconnected from NATS")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Debug().Msg("NATS connection closed")
			close(closed)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
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
	if cfg.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("queue: nkey seed %s: %w", cfg.NKeySeedFile, err)
		}
		opts = append(opts, o)
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" || cfg.KeyFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}

	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(cfg.url(), opts...)
		done <- result{nc, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("queue: connect to %s: %w", Redact(cfg.url()), ctx.Err())
	}
	if r.err != nil {
		return nil, connectError(cfg.url(), r.err)
	}
	js, err := jetstream.New(r.nc)
	if err != nil {
		r.nc.Close()
		return nil, fmt.Errorf("queue: jetstream: %w", err)
	}
	log.Info().Str("server", r.nc.ConnectedUrlRedacted()).Msg("connected to NATS")
	return &Conn{nc: r.nc, js: js, log: log, closed: closed}, nil
}

func connectError(url string, err error) error {
	if errors.Is(err, nats.ErrNoServers) {
		return fmt.Errorf("queue: connect to %s: %w: %v", Redact(url), ErrNoServer, err)
	}
	return fmt.Errorf("queue: connect to %s: %w", Redact(url), err)
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

// ServerURL is the (redacted) URL of the server currently connected to.
func (c *Conn) ServerURL() string { return c.nc.ConnectedUrlRedacted() }
