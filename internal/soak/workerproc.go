package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/memlimit"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/roles"
	"github.com/orderly-dev/orderly/worker"
)

// WorkerCommand is the argument that makes the soak binary a worker
// process: `soak worker [flags]`. The soak runs its own binary that way, so
// the workers are built from the same tree as the soak, in one go build.
const WorkerCommand = "worker"

// workerOptions are the soak worker's flags: cmd/worker's connection and
// runtime flags that the soak sets, plus the gateway file.
type workerOptions struct {
	conn            cli.ConnFlags
	httpAddr        string
	id              string
	gatewayFile     string
	partitions      int
	replicas        int
	queueLimit      int64
	concurrency     int
	actionTimeout   time.Duration
	actionRetries   int
	actorIdle       time.Duration
	memoryLimit     memlimit.Flag
	shutdownTimeout time.Duration
	dedupeWindow    time.Duration
	dlqMaxBytes     int64
	historyPerKey   int64
	logLevel        string
}

func workerFlags(o *workerOptions) *pflag.FlagSet {
	fs := pflag.NewFlagSet("soak worker", pflag.ContinueOnError)
	o.conn.ConnectTimeout = 30 * time.Second
	o.conn.Register(fs, "NATS server or cluster")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:0", "address of /healthz, /readyz and /metrics")
	fs.StringVar(&o.id, "id", "", "this worker's name in its group (also written in each log entry it applies)")
	fs.StringVar(&o.gatewayFile, "gateway-file", "", "JSON settings of the simulated gateway ({\"latency\":\"20ms\",\"fail_rate\":0.05}), read again when it changes")
	fs.IntVar(&o.partitions, "partitions", 16, "partitions of the events stream")
	fs.IntVar(&o.replicas, "replicas", 1, "replicas of streams and buckets")
	fs.Int64Var(&o.queueLimit, "queue-limit", 1_000_000, "most events stored and not yet processed")
	fs.IntVar(&o.concurrency, "concurrency", 64, "most slow calls at once")
	fs.DurationVar(&o.actionTimeout, "action-timeout", 30*time.Second, "bound on one attempt of a slow call")
	fs.IntVar(&o.actionRetries, "action-retries", 3, "retries of a failed slow call")
	fs.DurationVar(&o.actorIdle, "actor-idle", time.Minute, "idle time after which a key's actor leaves memory")
	fs.Var(&o.memoryLimit, "memory-limit", "memory the process may use, in `BYTES` (0: no limit)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 20*time.Second, "how long in-flight slow work gets to finish on SIGTERM")
	fs.DurationVar(&o.dedupeWindow, "dedupe-window", 24*time.Hour, "a job id is applied at most once within this window")
	fs.Int64Var(&o.dlqMaxBytes, "dead-letter-max-bytes", 0, "most bytes of the dead-letter stream (0: the default)")
	fs.Int64Var(&o.historyPerKey, "history-per-key", 0, "statuses of each key the status history keeps (0: the default)")
	fs.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warn or error")
	return fs
}

// RunWorker is the soak's worker process: the worker runtime with the
// checking workflow, connected as cmd/worker connects (queue.Dial, the
// worker's inbox prefix), its HTTP handler on --http, the memory limit
// applied as cmd/worker applies it, and a gentle stop on SIGTERM (when ctx
// ends). It returns nil after a stop.
func RunWorker(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	var o workerOptions
	fs := workerFlags(&o)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return &cli.UsageError{Err: err}
	}
	if err := cli.ApplyEnv(fs, getenv); err != nil {
		return &cli.UsageError{Err: err}
	}
	if o.id == "" {
		return cli.Usagef("--id: want the worker's name")
	}
	log, err := cli.Logger(stderr, o.logLevel)
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	if o.memoryLimit.Bytes > 0 {
		memlimit.SetSoft(o.memoryLimit.Bytes, getenv)
	}

	wf, err := NewWorkflow(WorkflowConfig{
		Worker: o.id, GatewayFile: o.gatewayFile,
		Gateway: Gateway{Latency: 20 * time.Millisecond},
	})
	if err != nil {
		return err
	}

	var handler http.Handler = http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		http.Error(rw, "starting", http.StatusServiceUnavailable)
	})
	var current http.Handler
	ln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	ready := make(chan struct{})
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-ready:
			current.ServeHTTP(rw, r)
		default:
			handler.ServeHTTP(rw, r)
		}
	})}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-served
	}()

	cfg := o.conn.Config("orderly-soak-worker", &log)
	cfg.InboxPrefix = roles.WorkerInbox
	nc, err := queue.Dial(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer nc.Close()

	w, err := worker.New(nc, worker.Config{
		Queue: worker.QueueConfig{
			Partitions: o.partitions, QueueLimit: o.queueLimit, Replicas: o.replicas,
			DedupeWindow: o.dedupeWindow, DeadLetterMaxBytes: o.dlqMaxBytes, HistoryPerKey: o.historyPerKey,
		},
		Concurrency:     o.concurrency,
		ActionTimeout:   o.actionTimeout,
		ActionRetries:   o.actionRetries,
		ActorIdle:       o.actorIdle,
		MemoryLimit:     o.memoryLimit.Bytes,
		ShutdownTimeout: o.shutdownTimeout,
		ID:              o.id,
		Logger:          &log,
	}, wf)
	if err != nil {
		return err
	}
	current = w.Handler()
	close(ready)
	// As cmd/worker: the start-up does not end with the signal's context;
	// a signal during start-up stops the worker, which ends the start-up.
	stopStartUp := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout+5*time.Second)
		defer cancel()
		_ = w.Stop(sctx)
	})
	err = w.Start(context.WithoutCancel(ctx))
	stopStartUp()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	log.Info().Msg("soak worker ready")
	<-ctx.Done()
	log.Info().Msg("signal received: draining")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout+5*time.Second)
	defer cancel()
	if err := w.Stop(sctx); err != nil {
		log.Warn().Err(err).Msg("stop did not finish in time")
	}
	if err := queue.Drain(sctx, nc); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Warn().Err(err).Msg("drain NATS connection")
	}
	return nil
}
