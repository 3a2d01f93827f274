// Package embedded runs a NATS server with JetStream inside the process, so
// that one command runs all of Orderly on a laptop and tests run against a
// real broker.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// Config configures the embedded server. A zero field means its default.
type Config struct {
	// Listen is the host:port clients connect to. Default: 127.0.0.1:4222.
	// Port 0 or -1 picks a free port. The server listens on loopback unless
	// told otherwise; on any other address without credentials, Start logs
	// a warning.
	Listen string
	// DataDir is where JetStream keeps its store. Default: ./orderly-data.
	// Start locks it (the file orderly.lock in it) until Shutdown or the
	// end of the process, so that two servers never share a store.
	DataDir string
	// User and Password, when set, are required of every client: the one
	// user, which may do anything. Ignored when Users is set.
	User, Password string
	// Users, when set, are the server's only users, each allowed only what
	// its Publish and Subscribe lists say. Default: none.
	Users []User
	// ServerName names the server. Default: "orderly-embedded".
	ServerName string
	// StartTimeout bounds how long Start waits for the server to accept
	// clients. Default: 10s.
	StartTimeout time.Duration
	// Logger receives the server's logs. Default: discard them.
	Logger *zerolog.Logger
}

// ErrDataDirLocked means another server (another worker, most likely) uses
// the data directory.
var ErrDataDirLocked = errors.New("data dir in use")

// lockFile is the file in DataDir that Start locks.
const lockFile = "orderly.lock"

// User is one user of the embedded server and what it may do.
type User struct {
	// Name and Password authenticate the user. Both required.
	Name, Password string
	// Publish and Subscribe list the subjects the user may publish and
	// subscribe to, NATS wildcards allowed; the server refuses every other
	// subject. A nil list allows every subject.
	Publish, Subscribe []string
}

// Server is a running embedded NATS server.
type Server struct {
	s        *server.Server
	stopOnce sync.Once
	unlock   func()
}

// ParseListen splits a Listen address as Start does: an empty host is
// 127.0.0.1, and port 0 or -1 picks a free port (returned as -1).
func ParseListen(addr string) (host string, port int, err error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("listen address %q: %w", addr, err)
	}
	port, err = strconv.Atoi(portStr)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("listen address %q: port %q: want 0-65535 (0 or -1: any free port)", addr, portStr)
	}
	if port == 0 {
		port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return host, port, nil
}

// Start locks the data directory, starts the server and waits until it
// accepts clients. An address in use or a store that cannot be opened fails
// at once, with the cause.
func Start(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:4222"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "./orderly-data"
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "orderly-embedded"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	host, port, err := ParseListen(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	log := zerolog.Nop()
	if cfg.Logger != nil {
		log = cfg.Logger.With().Str("component", "nats-server").Logger()
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		Username:   cfg.User,
		Password:   cfg.Password,
		NoSigs:     true, // the process owns its signals
		MaxPayload: 8 << 20,
	}
	if len(cfg.Users) > 0 {
		opts.Username, opts.Password = "", ""
		for _, u := range cfg.Users {
			if u.Name == "" || u.Password == "" {
				return nil, fmt.Errorf("embedded: user %q: a name and a password are required", u.Name)
			}
			su := &server.User{Username: u.Name, Password: u.Password}
			if u.Publish != nil || u.Subscribe != nil {
				su.Permissions = &server.Permissions{Publish: allowOnly(u.Publish), Subscribe: allowOnly(u.Subscribe)}
			}
			opts.Users = append(opts.Users, su)
		}
	}
	if open(opts) && !loopback(host) {
		log.Warn().Str("listen", cfg.Listen).Msg("the embedded NATS server is open to the network without authentication: anyone who reaches this address can read and change every event and state (give it a user and password, or listen on 127.0.0.1)")
	}
	unlock, err := lockDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unlock()
		}
	}()
	// The server would find out only after opening its store, and then say
	// "not ready" after StartTimeout: check the port first. (It is free
	// again at once: Go listeners set SO_REUSEADDR.)
	if port != server.RANDOM_PORT {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("embedded: NATS port: %w", err)
		}
		ln.Close()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	// The server reports what stops it from starting (the port taken after
	// all, a store it cannot open) as a fatal log line, then waits: catch it.
	fatal := make(chan string, 1)
	s.SetLoggerV2(&logger{l: log, fatal: fatal}, log.GetLevel() <= zerolog.DebugLevel, log.GetLevel() <= zerolog.TraceLevel, false)
	stop := func() {
		s.Shutdown()
		s.WaitForShutdown()
	}
	go s.Start()
	deadline := time.Now().Add(cfg.StartTimeout)
	for !s.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-fatal:
			stop()
			return nil, fmt.Errorf("embedded: NATS server: %s", msg)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("embedded: server on %s not ready within %s", cfg.Listen, cfg.StartTimeout)
		}
	}
	if !s.JetStreamEnabled() {
		stop()
		return nil, errors.New("embedded: JetStream did not start (see the server log)")
	}
	ok = true
	return &Server{s: s, unlock: unlock}, nil
}

// open reports whether the server lets any client in.
func open(o *server.Options) bool {
	return o.Username == "" && o.Authorization == "" && len(o.Users) == 0 && len(o.Nkeys) == 0 &&
		len(o.TrustedOperators) == 0 && len(o.TrustedKeys) == 0 && o.CustomClientAuthentication == nil
}

// loopback reports whether host is reachable only from this machine.
func loopback(host string) bool {
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	return host == "localhost"
}

// allowOnly allows the subjects of list and nothing else; nil: anything.
// (To the server an empty allow list means no restriction at all.)
func allowOnly(list []string) *server.SubjectPermission {
	switch {
	case list == nil:
		return nil
	case len(list) == 0:
		return &server.SubjectPermission{Deny: []string{">"}}
	}
	return &server.SubjectPermission{Allow: list}
}

// ClientURL is the URL clients connect to.
func (s *Server) ClientURL() string { return s.s.ClientURL() }

// Shutdown stops the server, flushing JetStream's store, waits for it and
// unlocks the data directory. Safe to call twice.
func (s *Server) Shutdown() {
	s.stopOnce.Do(func() {
		s.s.Shutdown()
		s.s.WaitForShutdown()
		s.unlock()
	})
}

// logger sends the server's log lines to zerolog, and its first fatal one
// to fatal too.
type logger struct {
	l     zerolog.Logger
	fatal chan<- string
}

func (g *logger) Noticef(format string, v ...any) { g.l.Info().Msgf(format, v...) }
func (g *logger) Warnf(format string, v ...any)   { g.l.Warn().Msgf(format, v...) }
func (g *logger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	g.l.Error().Msg(msg)
	select {
	case g.fatal <- msg:
	default:
	}
}
func (g *logger) Errorf(format string, v ...any) { g.l.Error().Msgf(format, v...) }
func (g *logger) Debugf(format string, v ...any) { g.l.Debug().Msgf(format, v...) }
func (g *logger) Tracef(format string, v ...any) { g.l.Trace().Msgf(format, v...) }
