package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/queue"
	"github.com/orderly-dev/orderly/worker"
)

type options struct {
	conn            cli.ConnFlags
	listen, dataDir string
	httpAddr        string
	simLatency      time.Duration
	simFailRate     float64
	paymentTimeout  time.Duration
	queueLimit      int64
	partitions      int
	replicas        int
	batch           int
	concurrency     int
	actionTimeout   time.Duration
	actionRetries   int
	actorIdle       time.Duration
	maxActors       int
	shutdownTimeout time.Duration
	logLevel        string
	id              string
}

func flags(name string, o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	o.conn.Register(fs, "NATS server or cluster; empty: start an embedded server")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:4222", "where the embedded server accepts clients")
	fs.StringVar(&o.dataDir, "data-dir", "./orderly-data", "the embedded server's JetStream store")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:8080", "address of /healthz, /readyz and /metrics")
	fs.DurationVar(&o.simLatency, "sim-latency", 50*time.Millisecond, "latency of each simulated payment gateway call")
	fs.Float64Var(&o.simFailRate, "sim-fail-rate", 0, "probability in [0,1] that a simulated gateway call is declined")
	fs.DurationVar(&o.paymentTimeout, "payment-timeout", order.DefaultPaymentTimeout, "how long an order may await payment before it fails")
	fs.Int64Var(&o.queueLimit, "queue-limit", 1_000_000, "most events stored and not yet processed; past it publishing fails with \"queue full\"")
	fs.IntVar(&o.partitions, "partitions", 16, "partitions of the events stream (fixed when the stream is created)")
	fs.IntVar(&o.replicas, "replicas", 1, "replicas of streams and buckets (3 on a cluster)")
	fs.IntVar(&o.batch, "batch", 256, "most events per pull of a partition")
	fs.IntVar(&o.concurrency, "concurrency", 64, "most slow calls at once")
	fs.DurationVar(&o.actionTimeout, "action-timeout", 30*time.Second, "bound on one attempt of a slow call")
	fs.IntVar(&o.actionRetries, "action-retries", 3, "retries of a failed slow call before the order fails")
	fs.DurationVar(&o.actorIdle, "actor-idle", time.Minute, "idle time after which a key's actor leaves memory")
	fs.IntVar(&o.maxActors, "max-actors", 100_000, "most key actors in memory")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 20*time.Second, "how long in-flight slow work gets to finish on SIGTERM")
	fs.StringVar(&o.id, "id", "", "this worker's name in its group (default: host name and a random suffix; on Kubernetes, the pod name)")
	fs.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	return fs
}

const usage = `usage: worker [flags]            run the order workflow
       worker graph [--format mermaid|dot]   print its state diagram

Every flag can also be set as ORDERLY_<FLAG> (dashes as underscores), and
--nats-url as NATS_URL. Flags:
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "graph" {
		return graph(args[1:], stdout)
	}
	var o options
	fs := flags("worker", &o)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return &cli.UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if err := cli.ApplyEnv(fs, getenv); err != nil {
		return &cli.UsageError{Err: err}
	}
	if o.simFailRate < 0 || o.simFailRate > 1 {
		return cli.Usagef("--sim-fail-rate %v: want a probability in [0,1]", o.simFailRate)
	}
	log, err := cli.Logger(stderr, o.logLevel)
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	return serve(ctx, o, log)
}

// serve runs the start-up chain (HTTP, NATS, worker), then waits for ctx to
// end and shuts down in reverse order.
func serve(ctx context.Context, o options, log zerolog.Logger) error {
	// /readyz answers 503 until the chain is done, so HTTP comes first.
	var current atomic.Pointer[worker.Worker]
	ln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	srv := &http.Server{Handler: handler(&current), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info().Str("addr", ln.Addr().String()).Msg("start-up: http listening (/healthz, /readyz, /metrics)")

	cfg := o.conn.Config("orderly-worker", &log)
	if o.conn.URL == "" {
		log.Info().Str("listen", o.listen).Str("data_dir", o.dataDir).Msg("start-up: starting embedded NATS server")
		ns, err := embedded.Start(embedded.Config{
			Listen: o.listen, DataDir: o.dataDir,
			User: o.conn.User, Password: o.conn.Password, Logger: &log,
		})
		if err != nil {
			return err
		}
		defer func() {
			log.Info().Msg("shutting down embedded NATS server")
			ns.Shutdown()
		}()
		cfg.URLs = []string{ns.ClientURL()}
	}

	log.Info().Str("urls", queue.Redact(strings.Join(cfg.URLs, ","))).Msg("start-up: connecting to NATS")
	conn, err := connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer conn.Close()

	wf, err := order.NewWorkflow(order.Config{PaymentTimeout: o.paymentTimeout},
		order.NewSimGateway(order.SimConfig{Latency: o.simLatency, FailRate: o.simFailRate}))
	if err != nil {
		return err
	}
	w, err := worker.New(conn, worker.Config{
		Queue: queue.Spec{
			Partitions: o.partitions, QueueLimit: o.queueLimit, Replicas: o.replicas,
		},
		Batch:           o.batch,
		Concurrency:     o.concurrency,
		ActionTimeout:   o.actionTimeout,
		ActionRetries:   o.actionRetries,
		ActorIdle:       o.actorIdle,
		MaxActors:       o.maxActors,
		ShutdownTimeout: o.shutdownTimeout,
		ID:              o.id,
		Logger:          &log,
	}, wf)
	if err != nil {
		return err
	}
	current.Store(w)
	// The worker lives until SIGTERM, and then stops gently: its start
	// context must not end with the signal's.
	if err := w.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}

	<-ctx.Done()
	log.Info().Msg("signal received: draining")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout+5*time.Second)
	defer cancel()
	if err := w.Stop(sctx); err != nil {
		log.Warn().Err(err).Msg("stop did not finish in time")
	}
	if err := conn.Drain(); err != nil {
		log.Warn().Err(err).Msg("drain NATS connection")
	}
	return nil
}

// connect retries until NATS answers or ctx ends: in a cluster the worker
// may well start before NATS does.
func connect(ctx context.Context, cfg queue.Config, log zerolog.Logger) (*queue.Conn, error) {
	for wait := time.Second; ; wait = min(2*wait, 15*time.Second) {
		conn, err := queue.Connect(ctx, cfg)
		if err == nil {
			return conn, nil
		}
		if !errors.Is(err, queue.ErrNoServer) {
			return nil, err
		}
		log.Warn().Err(err).Dur("retry_in", wait).Msg("NATS not reachable yet")
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
	}
}

func handler(current *atomic.Pointer[worker.Worker]) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if w := current.Load(); w != nil {
			w.Handler().ServeHTTP(rw, r)
			return
		}
		if r.URL.Path == "/healthz" {
			fmt.Fprintln(rw, "ok")
			return
		}
		http.Error(rw, "starting", http.StatusServiceUnavailable)
	})
}

func graph(args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("worker graph", pflag.ContinueOnError)
	format := fs.String("format", "mermaid", "mermaid or dot")
	if err := fs.Parse(args); err != nil {
		return &cli.UsageError{Err: err}
	}
	m := order.New(order.Config{})
	switch *format {
	case "mermaid":
		fmt.Fprint(stdout, m.Mermaid())
	case "dot":
		fmt.Fprint(stdout, m.DOT())
	default:
		return cli.Usagef("--format %q: want mermaid or dot", *format)
	}
	return nil
}
