// Package embedded runs a NATS server with JetStream inside the process, so
// that one command runs all of Orderly on a laptop and tests run against a
// real broker.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// Config configures the embedded server. A zero field means its default.
type Config struct {
	// Listen is the host:port clients connect to. Default: 127.0.0.1:4222.
	// Port -1 picks a free port. The server listens on loopback unless told
	// otherwise.
	Listen string
	// DataDir is where JetStream keeps its store. Default: ./orderly-data.
	DataDir string
	// User and Password, when set, are required of every client.
	User, Password string
	// ServerName names the server. Default: "orderly-embedded".
	ServerName string
	// StartTimeout bounds how long Start waits for the server to accept
	// clients. Default: 10s.
	StartTimeout time.Duration
	// Logger receives the server's logs. Default: discard them.
	Logger *zerolog.Logger
}

// Server is a running embedded NATS server.
type Server struct {
	s *server.Server
}

// Start starts the server and waits until it accepts clients.
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
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded: listen port %q: %w", portStr, err)
	}
	if host == "" {
		host = "127.0.0.1"
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
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	if cfg.Logger != nil {
		l := cfg.Logger.With().Str("component", "nats-server").Logger()
		s.SetLoggerV2(&logger{l}, cfg.Logger.GetLevel() <= zerolog.DebugLevel, cfg.Logger.GetLevel() <= zerolog.TraceLevel, false)
	}
	go s.Start()
	if !s.ReadyForConnections(cfg.StartTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("embedded: server on %s not ready within %s", cfg.Listen, cfg.StartTimeout)
	}
	if !s.JetStreamEnabled() {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, errors.New("embedded: JetStream did not start (see the server log)")
	}
	return &Server{s: s}, nil
}

// ClientURL is the URL clients connect to.
func (s *Server) ClientURL() string { return s.s.ClientURL() }

// Shutdown stops the server, flushing JetStream's store, and waits for it.
// Safe to call twice.
func (s *Server) Shutdown() {
	s.s.Shutdown()
	s.s.WaitForShutdown()
}

// logger sends the server's log lines to zerolog.
type logger struct{ l zerolog.Logger }

func (g *logger) Noticef(format string, v ...any) { g.l.Info().Msgf(format, v...) }
func (g *logger) Warnf(format string, v ...any)   { g.l.Warn().Msgf(format, v...) }
func (g *logger) Fatalf(format string, v ...any)  { g.l.Error().Msgf(format, v...) }
func (g *logger) Errorf(format string, v ...any)  { g.l.Error().Msgf(format, v...) }
func (g *logger) Debugf(format string, v ...any)  { g.l.Debug().Msgf(format, v...) }
func (g *logger) Tracef(format string, v ...any)  { g.l.Trace().Msgf(format, v...) }
