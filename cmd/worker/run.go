package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/console"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/memlimit"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/roles"
	"github.com/orderly-dev/orderly/internal/telemetry"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/worker"
)

type options struct {
	reconnectTimeout time.Duration
	version          *bool

	conn            cli.ConnFlags
	listen, dataDir string
	httpAddr        string
	simLatency      time.Duration
	simFailRate     float64
	paymentTimeout  time.Duration
	paymentReminder time.Duration
	queueLimit      int64
	partitions      int
	replicas        int
	batch           int
	concurrency     int
	actionTimeout   time.Duration
	actionRetries   int
	actorIdle       time.Duration
	maxActors       int
	memoryLimit     memlimit.Flag
	workerMemory    int64 // the worker's share of the memory limit
	shutdownTimeout time.Duration
	memberTTL       time.Duration
	dedupeWindow    time.Duration
	consoleToken    string
	consoleCreds    cli.Credentials // the console's own connection's
	historyPerKey   int64
	historyMaxAge   time.Duration
	inventory       bool
	logLevel        string
	id              string
	otel            bool
	roles           roleFlags
}

func flags(name string, o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	o.conn.ConnectTimeout = 30 * time.Second
	o.conn.Register(fs, "NATS server or cluster; empty: start an embedded server")
	fs.Lookup("connect-timeout").Usage = "how long the start-up may wait for NATS, retrying with backoff: for a server to answer, then for its cluster to serve JetStream (a forming cluster with no leader yet, too few nodes for --replicas) while the worker provisions and joins its group; /readyz says what it waits for (0: wait until interrupted); wrong credentials or TLS fail at once"
	fs.DurationVar(&o.reconnectTimeout, "reconnect-timeout", 3*time.Minute, "once started, how long the NATS connection (the worker's, or the web console's own) may stay down (reconnecting, or refused) before /healthz fails and the worker exits 1 to be restarted (0: never)")
	o.version = cli.VersionFlag(fs)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:4222", "where the embedded server accepts clients (port 0 or -1: any free port, logged at start-up); an address other than loopback without --user logs a warning")
	fs.StringVar(&o.dataDir, "data-dir", "./orderly-data", "the embedded server's JetStream store, locked while the worker runs (a second worker on it fails at once)")
	fs.StringVar(&o.httpAddr, "http", "127.0.0.1:8080", "address of the web console (/), /healthz, /readyz, /partitions and /metrics (port 0: any free port, logged at start-up)")
	fs.DurationVar(&o.simLatency, "sim-latency", 50*time.Millisecond, "latency of each simulated payment gateway call")
	fs.Float64Var(&o.simFailRate, "sim-fail-rate", 0, "probability in [0,1] that a simulated gateway call is declined")
	fs.DurationVar(&o.paymentTimeout, "payment-timeout", order.DefaultPaymentTimeout, "how long an order may await payment before it fails")
	fs.DurationVar(&o.paymentReminder, "payment-reminder", order.DefaultPaymentReminder, "how often an order awaiting payment gets a payment_reminder event, counted from when it began to wait; whole seconds, as the broker schedules them (0: no reminders)")
	fs.Int64Var(&o.queueLimit, "queue-limit", 1_000_000, "most events stored and not yet processed; past it publishing fails with \"queue full\"")
	fs.IntVar(&o.partitions, "partitions", 16, "partitions of the events stream, 1 to 1024; fixed when the stream is created, after which the stream's own count wins")
	fs.IntVar(&o.replicas, "replicas", 1, "replicas of streams and buckets, 1 to 5 (3 on a cluster)")
	fs.IntVar(&o.batch, "batch", 256, "most events per pull of a partition, 1 to 4096; unless set, fewer if --memory-limit calls for it")
	fs.IntVar(&o.concurrency, "concurrency", 64, "most slow calls at once")
	fs.DurationVar(&o.actionTimeout, "action-timeout", 30*time.Second, "bound on one attempt of a slow call (0: the default)")
	fs.IntVar(&o.actionRetries, "action-retries", 3, "retries of a failed slow call before the order fails (0: the default, so every call gets at least one retry)")
	fs.DurationVar(&o.actorIdle, "actor-idle", time.Minute, "idle time after which a key's actor leaves memory")
	fs.IntVar(&o.maxActors, "max-actors", 100_000, "most key actors in memory; unless set, fewer if --memory-limit calls for it")
	fs.Var(&o.memoryLimit, "memory-limit", "memory the process may use, in `BYTES` (536870912, 512Mi, 1Gi, 500MB; 0: no limit); sizes --max-actors, --batch and the events held in memory, and sets the Go runtime's soft limit to 90% of it unless GOMEMLIMIT is lower (default: the lesser of GOMEMLIMIT and the cgroup's memory limit, else no limit)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 20*time.Second, "how long in-flight slow work gets to finish on SIGTERM")
	fs.DurationVar(&o.memberTTL, "member-ttl", queue.DefaultMemberTTL, "how long a worker stays in its group without a heartbeat (it heartbeats five times per period): the others take over the partitions of a worker that died 0.8 to 1.2 times this after it died; at least 500ms (see docs/operations.md, Worker loss)")
	fs.DurationVar(&o.dedupeWindow, "dedupe-window", 24*time.Hour, "a job id is applied at most once within this window, across restarts and replicas (at least 1s)")
	fs.StringVar(&o.consoleToken, "console-token", "", "the secret the web console's write actions (send an event, replay a dead letter, cancel, schedules) must carry; empty: writes only on requests to a loopback address, read-only elsewhere")
	o.consoleCreds.Register(fs, consolePrefix, "the web console's own connection", credentialsOfConsole...)
	fs.Lookup(consolePrefix + "user").Usage = "the web console's own NATS user, with the operator role: the console sends events, replays dead letters and follows statuses as this user, on a connection of its own (default: through the worker's connection; with the embedded server, as --operator-user)"
	fs.Int64Var(&o.historyPerKey, "history-per-key", 100, "statuses of each key kept in the status history (enqueue history, watch --since/--all), the oldest dropped first (0: no history; the history stream is deleted)")
	fs.DurationVar(&o.historyMaxAge, "history-max-age", 7*24*time.Hour, "how long the status history keeps a status (at least 1s)")
	fs.BoolVar(&o.inventory, "inventory", true, "keep the inventory of keys by state that enqueue stats, keys and stuck read (about two writes per change of state); every worker of a workflow must agree")
	fs.StringVar(&o.id, "id", "", "this worker's name in its group: 1-255 characters of A-Z a-z 0-9 - _ = . (default: the host name and a random suffix)")
	fs.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warn or error; logs are JSON on stderr, or console lines on a terminal")
	fs.BoolVar(&o.otel, "otel", false, "trace events with OpenTelemetry, exported over OTLP as the standard OTEL_* variables say: to localhost:4318 unless OTEL_EXPORTER_OTLP_ENDPOINT names a receiver, which alone also turns tracing on (see docs/operations.md, Tracing)")
	o.roles.register(fs)
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
	if *o.version {
		cli.PrintVersion(stdout, "worker")
		return nil
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q", fs.Arg(0))
	}
	if err := cli.ApplyEnv(fs, getenv); err != nil {
		return &cli.UsageError{Err: err}
	}
	if err := o.validate(); err != nil {
		return err
	}
	if err := o.roles.validate(o.conn); err != nil {
		return err
	}
	if err := o.consoleCreds.Validate(consolePrefix); err != nil {
		return err
	}
	if o.dedupeWindow < time.Second {
		return cli.Usagef("--dedupe-window %s: want at least 1s", o.dedupeWindow)
	}
	log, err := cli.Logger(stderr, o.logLevel)
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	limit := memlimit.Limit{Bytes: o.memoryLimit.Bytes, Source: cli.Origin(fs, "memory-limit")}
	if limit.Source == "" {
		if limit, err = memlimit.Detect(getenv); err != nil {
			return &cli.UsageError{Err: err}
		}
	}
	applyMemoryLimit(&o, limit, getenv, log)
	tr, err := telemetry.Start(ctx, telemetry.Config{Flag: o.otel, Service: "orderly-worker", Getenv: getenv, Logger: &log})
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	if tr.Provider != nil {
		log.Info().Str("protocol", tr.Protocol).Msg("start-up: tracing on: spans exported over OTLP as OTEL_* say")
	}
	defer func() {
		// The last spans: after the worker has stopped.
		if err := tr.Shutdown(context.WithoutCancel(ctx)); err != nil {
			log.Warn().Err(err).Msg("tracing: spans not exported")
		}
	}()
	return serve(ctx, o, fs, log, tr.Provider)
}

// applyMemoryLimit sets the Go runtime's soft limit from the process's
// memory limit and the worker's share of it: all of it with --nats-url;
// half with the embedded server, which shares the process and whose memory
// grows with what its streams hold.
func applyMemoryLimit(o *options, limit memlimit.Limit, getenv func(string) string, log zerolog.Logger) {
	if limit.Bytes <= 0 {
		log.Info().Str("source", limit.Source).Msg("start-up: no memory limit; the runtime bounds have their fixed defaults")
		return
	}
	o.workerMemory = limit.Bytes
	if o.conn.URL == "" {
		o.workerMemory = limit.Bytes / 2
	}
	ev := log.Info().Str("memory_limit", memlimit.Format(limit.Bytes)).Str("source", limit.Source).
		Str("worker_share", memlimit.Format(o.workerMemory))
	// A limit read from GOMEMLIMIT is already the runtime's soft limit.
	var soft memlimit.Soft
	if limit.Source != "GOMEMLIMIT" {
		soft, _ = memlimit.SetSoft(limit.Bytes, getenv)
	}
	if soft.Bytes > 0 {
		ev = ev.Str("go_soft_limit", memlimit.Format(soft.Bytes))
	} else {
		ev = ev.Str("go_soft_limit", "GOMEMLIMIT")
	}
	ev.Msg("start-up: memory limit")
}

// The flags of the console's own connection: --console-user,
// --console-password, --console-nkey, --console-creds (no --console-token:
// that is the secret of the console's write actions).
const consolePrefix = "console-"

var credentialsOfConsole = []string{"user", "password", "nkey", "creds"}

// consoleHelp ends what the console says when the server refused its user a
// permission.
const consoleHelp = "start the worker with --console-user and --console-password (or --console-creds) of such a user, or ORDERLY_CONSOLE_USER and ORDERLY_CONSOLE_PASSWORD; see \"Web console\" in docs/operations.md"

// maxBatch bounds --batch: a partition holds up to twice its batch of
// events, each up to the stream's largest message, in memory.
const maxBatch = 4096

// validate turns every flag value that cannot work into a usage error, so
// that none of them reaches a panic or a failure after start-up.
func (o *options) validate() error {
	positive := func(name string, d time.Duration) error {
		if d <= 0 {
			return cli.Usagef("--%s %s: want a positive duration", name, d)
		}
		return nil
	}
	notNegative := func(name string, d time.Duration, zero string) error {
		if d < 0 {
			return cli.Usagef("--%s %s: want 0 (%s) or more", name, d, zero)
		}
		return nil
	}
	atLeast := func(name string, v, lo int64) error {
		if v < lo {
			return cli.Usagef("--%s %d: want %d or more", name, v, lo)
		}
		return nil
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	add(o.conn.Validate())
	add(notNegative("reconnect-timeout", o.reconnectTimeout, "never give up"))
	if _, _, err := embedded.ParseListen(o.listen); err != nil {
		add(cli.Usagef("--listen: %v", err))
	}
	if o.dataDir == "" {
		add(cli.Usagef("--data-dir: want a directory"))
	}
	if _, port, err := net.SplitHostPort(o.httpAddr); err != nil {
		add(cli.Usagef("--http %q: %v", o.httpAddr, err))
	} else if _, err := net.LookupPort("tcp", port); err != nil || strings.HasPrefix(port, "-") {
		add(cli.Usagef("--http %q: bad port %q", o.httpAddr, port))
	}
	add(notNegative("sim-latency", o.simLatency, "no latency"))
	if !(o.simFailRate >= 0 && o.simFailRate <= 1) { // NaN too
		add(cli.Usagef("--sim-fail-rate %v: want a probability in [0,1]", o.simFailRate))
	}
	add(positive("payment-timeout", o.paymentTimeout))
	if r := o.paymentReminder; r < 0 || r > 0 && (r < time.Second || r%time.Second != 0) {
		add(cli.Usagef("--payment-reminder %v: want whole seconds, at least 1s, as the broker schedules periodic events (0: no reminders)", r))
	}
	add(atLeast("queue-limit", o.queueLimit, 1))
	if o.partitions < 1 || o.partitions > 1024 {
		add(cli.Usagef("--partitions %d: want 1 to 1024", o.partitions))
	}
	if o.replicas < 1 || o.replicas > 5 {
		add(cli.Usagef("--replicas %d: want 1 to 5", o.replicas))
	}
	if o.batch < 1 || o.batch > maxBatch {
		add(cli.Usagef("--batch %d: want 1 to %d", o.batch, maxBatch))
	}
	add(atLeast("concurrency", int64(o.concurrency), 1))
	add(notNegative("action-timeout", o.actionTimeout, "the default"))
	add(atLeast("action-retries", int64(o.actionRetries), 0))
	add(positive("actor-idle", o.actorIdle))
	add(atLeast("max-actors", int64(o.maxActors), 1))
	add(positive("shutdown-timeout", o.shutdownTimeout))
	add(atLeast("history-per-key", o.historyPerKey, 0))
	if o.historyMaxAge < time.Second {
		add(cli.Usagef("--history-max-age %s: want at least 1s", o.historyMaxAge))
	}
	if o.memberTTL < 500*time.Millisecond {
		add(cli.Usagef("--member-ttl %s: want at least 500ms", o.memberTTL))
	}
	if o.id != "" && !validID(o.id) {
		add(cli.Usagef("--id %q: want 1-255 characters of A-Z a-z 0-9 - _ = . (a NATS KV key)", o.id))
	}
	if len(errs) == 0 {
		return nil
	}
	// One line per problem, all of them at once.
	return &cli.UsageError{Err: errors.Join(errs...)}
}

// historyPerKey maps --history-per-key to worker.QueueConfig.HistoryPerKey,
// whose zero is the default: 0 on the command line is no history.
func historyPerKey(n int64) int64 {
	if n == 0 {
		return worker.NoHistory
	}
	return n
}

// validID reports whether id can name a worker: it is a key of the
// members bucket.
func validID(id string) bool {
	if len(id) > 255 || strings.HasPrefix(id, ".") || strings.HasSuffix(id, ".") || strings.Contains(id, "..") {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_=.", c) >= 0) {
			return false
		}
	}
	return true
}

// serve runs the start-up chain (HTTP, NATS, worker), then waits for ctx to
// end, or for the NATS connection to be lost for longer than
// --reconnect-timeout, and shuts down in reverse order. A signal at any
// moment ends it with nil: exit 0.
func serve(ctx context.Context, o options, fs *pflag.FlagSet, log zerolog.Logger, tp trace.TracerProvider) error {
	// A signal during start-up ends the start-up, which is not a failure.
	interrupted := func(err error) error {
		if ctx.Err() != nil {
			log.Info().Err(err).Msg("signal received during start-up: exiting")
			return nil
		}
		return err
	}
	// /readyz answers 503 until the chain is done, so HTTP comes first.
	var current atomic.Pointer[worker.Worker]
	var con atomic.Pointer[console.Console]
	live := &liveness{bound: o.reconnectTimeout}
	ln, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return fmt.Errorf("http: %w", err)
	}
	srv := &http.Server{Handler: handler(&current, &con, live), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info().Str("addr", ln.Addr().String()).Msg("start-up: http listening (the console at /, /healthz, /readyz, /metrics)")

	// The console acts through a connection of its own where it has a user
	// of its own: the worker's role may not send events, read dead letters
	// or follow statuses.
	consoleAs, consoleFrom := o.consoleCreds, ""
	for _, name := range credentialsOfConsole {
		if from := cli.Origin(fs, consolePrefix+name); from != "" && consoleFrom == "" {
			consoleFrom = from
		}
	}
	cfg := o.conn.Config("orderly-worker", &log)
	// Replies and pulled events under the worker's own prefix: the only one
	// its role may subscribe to, so no producer can read them.
	cfg.InboxPrefix = roles.WorkerInbox
	urlFrom := cli.Origin(fs, "nats-url")
	if o.conn.URL == "" {
		log.Info().Str("listen", o.listen).Str("data_dir", o.dataDir).Msg("start-up: no NATS URL (--nats-url, ORDERLY_NATS_URL, NATS_URL): starting an embedded NATS server")
		users, err := o.roles.users(o.conn, log)
		if err != nil {
			return err
		}
		ns, err := embedded.Start(embedded.Config{
			Listen: o.listen, DataDir: o.dataDir, Users: users, Logger: &log,
		})
		if err != nil {
			return interrupted(err)
		}
		defer func() {
			log.Info().Msg("shutting down embedded NATS server")
			ns.Shutdown()
		}()
		// With port 0 or -1 this is the one place that says which it got.
		log.Info().Str("url", ns.ClientURL()).Msg("start-up: embedded NATS server listening")
		cfg.URLs = []string{ns.ClientURL()}
		urlFrom = "the embedded server"
		if !consoleAs.Given() && o.roles.operatorUser != "" {
			consoleAs, consoleFrom = cli.Credentials{User: o.roles.operatorUser, Password: o.roles.operatorPassword}, "--operator-user"
			log.Info().Msg("start-up: the web console acts as the embedded server's operator user (--operator-user)")
		}
	} else {
		// Someone with NATS_URL exported for the nats CLI gets no embedded
		// server: say so, and louder if they asked for one on the command line.
		log.Info().Str("from", urlFrom).Msg("start-up: NATS URL given; no embedded NATS server")
		for _, name := range []string{"listen", "data-dir"} {
			switch from := cli.Origin(fs, name); {
			case from == "--"+name:
				log.Warn().Str("nats_url_from", urlFrom).Msgf("--%s is ignored: the NATS URL from %s is used, and no embedded server starts", name, urlFrom)
			case from != "":
				log.Info().Str("nats_url_from", urlFrom).Msgf("%s is ignored: the NATS URL from %s is used, and no embedded server starts", from, urlFrom)
			}
		}
		if o.roles != (roleFlags{}) {
			log.Warn().Msg("start-up: --producer-user and --operator-user configure the embedded server; with a NATS URL they are ignored")
		}
	}

	ev := log.Info().Str("urls", queue.Redact(strings.Join(cfg.URLs, ","))).Str("from", urlFrom)
	if o.conn.ConnectTimeout > 0 {
		ev = ev.Dur("connect_timeout", o.conn.ConnectTimeout)
	}
	ev.Msg("start-up: connecting to NATS")
	// What the server refuses the console's connection, the console's
	// pages say plainly.
	refusals := console.NewRefusals()
	if !consoleAs.Given() {
		cfg.OnError = refusals.Note
		if o.conn.Credentials.Given() {
			log.Info().Msg("start-up: the web console acts through the worker's connection; under the permission roles its user may not send events, replay dead letters or follow statuses: give the console an operator's (--console-user and --console-password, or --console-creds)")
		}
	}
	connecting := time.Now()
	nc, err := queue.Dial(ctx, cfg)
	if err != nil {
		return interrupted(err)
	}
	defer nc.Close()
	live.worker.nc.Store(nc)
	consoleNC := nc
	if consoleAs.Given() {
		clog := log.With().Str("connection", "console").Logger()
		cconn := o.conn.As(consoleAs)
		ccfg := cconn.Config("orderly-console", &clog)
		ccfg.URLs, ccfg.OnError = cfg.URLs, refusals.Note
		log.Info().Str("credentials_from", consoleFrom).Msg("start-up: connecting the web console to NATS")
		cnc, err := queue.Dial(ctx, ccfg)
		if err != nil {
			return interrupted(fmt.Errorf("the web console's NATS connection (%s): %w", consoleFrom, err))
		}
		// Closed after the console and its client, before the embedded
		// server.
		defer cnc.Close()
		consoleNC = cnc
		live.console.nc.Store(cnc)
	}

	reminder := o.paymentReminder
	if reminder == 0 {
		reminder = -1 // order.Config's "off"; its zero is the default
	}
	ocfg := order.Config{PaymentTimeout: o.paymentTimeout, PaymentReminder: reminder}
	wf, err := order.NewWorkflow(ocfg,
		order.NewSimGateway(order.SimConfig{Latency: o.simLatency, FailRate: o.simFailRate}))
	if err != nil {
		return err
	}
	w, err := worker.New(nc, worker.Config{
		Queue: worker.QueueConfig{
			Partitions: o.partitions, QueueLimit: o.queueLimit, Replicas: o.replicas,
			DedupeWindow: o.dedupeWindow, HistoryPerKey: historyPerKey(o.historyPerKey), HistoryMaxAge: o.historyMaxAge,
			MemberTTL: o.memberTTL,
		},
		Batch:            explicit(fs, "batch", o.batch),
		Concurrency:      o.concurrency,
		ActionTimeout:    o.actionTimeout,
		ActionRetries:    o.actionRetries,
		ActorIdle:        o.actorIdle,
		MaxActors:        explicit(fs, "max-actors", o.maxActors),
		MemoryLimit:      o.workerMemory,
		ShutdownTimeout:  o.shutdownTimeout,
		StartTimeout:     startTimeout(o.conn.ConnectTimeout, time.Since(connecting)),
		ID:               o.id,
		DisableInventory: !o.inventory,
		Logger:           &log,
		TracerProvider:   tp,
	}, wf)
	if err != nil {
		return err
	}
	current.Store(w)
	cl, err := client.New(consoleNC, client.Config{TracerProvider: tp})
	if err != nil {
		return err
	}
	defer cl.Close()
	streams := cl
	if consoleNC != nc {
		// The streams' figures through the worker's own connection: its
		// role may read its streams' information, an operator's may not.
		if streams, err = client.New(nc, client.Config{}); err != nil {
			return err
		}
		defer streams.Close()
	}
	c, err := console.New(console.Config{
		Client: cl, Runtime: w, Workflows: []console.Workflow{console.WorkflowOf(order.New(ocfg))},
		Streams: streams, Refusals: refusals, PermissionHelp: consoleHelp,
		Token: o.consoleToken, Logger: &log,
	})
	if err != nil {
		return err
	}
	// Live views end before the worker stops and the connection drains.
	defer c.Close()
	con.Store(c)
	// The worker lives until SIGTERM, and then stops gently: its start
	// context must not end with the signal's. A signal during start-up
	// stops the worker, which ends the start-up at once.
	var stopping sync.WaitGroup // the Stop of a signal during start-up
	stopping.Add(1)
	stopStartUp := context.AfterFunc(ctx, func() {
		defer stopping.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout+5*time.Second)
		defer cancel()
		_ = w.Stop(sctx)
	})
	err = w.Start(context.WithoutCancel(ctx))
	if stopStartUp() {
		stopping.Done() // no signal during start-up
	}
	defer stopping.Wait()
	if err != nil {
		return interrupted(err)
	}

	// Run until a signal, or until the connection is lost for good.
	wctx, stopWatching := context.WithCancel(ctx)
	lost := make(chan error, 1)
	var watching sync.WaitGroup
	watching.Go(func() { lost <- live.watch(wctx) })
	var exit error
	select {
	case <-ctx.Done():
		log.Info().Msg("signal received: draining")
	case exit = <-lost:
		log.Error().Err(exit).Msg("NATS lost: stopping, to be restarted")
	}
	stopWatching()
	watching.Wait()
	c.Close()

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.shutdownTimeout+5*time.Second)
	defer cancel()
	if err := w.Stop(sctx); err != nil {
		log.Warn().Err(err).Msg("stop did not finish in time")
	}
	if err := queue.Drain(sctx, nc); err != nil {
		log.Warn().Err(err).Msg("drain NATS connection")
	}
	return exit
}

// liveness is what /healthz answers once connected: a connection closed
// for good, or down for longer than bound, is a process that must be
// restarted. It watches the worker's connection and, when the web console
// has one of its own, the console's too: a console whose user was revoked
// or whose password changed would otherwise be dead in a process that
// looks healthy, while the same credentials at start-up stop the worker.
//
// It reads the connections' status rather than setting handlers on them:
// the connections' own handlers log, and the worker shares its.
type liveness struct {
	bound   time.Duration // 0: no bound
	worker  watched
	console watched // unset while the console uses the worker's connection
}

// watched is one connection liveness follows.
type watched struct {
	nc        atomic.Pointer[nats.Conn]
	downSince atomic.Int64 // unix nanoseconds: when the connection was first seen down; 0 while up
}

// check returns why the connection makes the process not alive, or nil;
// name says which connection it is.
func (c *watched) check(name string, bound time.Duration, now time.Time) error {
	nc := c.nc.Load()
	if nc == nil {
		return nil // starting up: --connect-timeout bounds that
	}
	if nc.IsClosed() {
		return fmt.Errorf("%s closed", name)
	}
	if nc.IsConnected() {
		c.downSince.Store(0)
		return nil
	}
	c.downSince.CompareAndSwap(0, now.UnixNano())
	if ns := c.downSince.Load(); bound > 0 && now.Sub(time.Unix(0, ns)) >= bound {
		return fmt.Errorf("%s down for %s (--reconnect-timeout %s)", name, now.Sub(time.Unix(0, ns)).Round(time.Millisecond), bound)
	}
	return nil
}

// check returns why the process is not alive, or nil.
func (l *liveness) check(now time.Time) error {
	if err := l.worker.check("NATS connection", l.bound, now); err != nil {
		return err
	}
	return l.console.check("the web console's NATS connection", l.bound, now)
}

// statusChanges returns the changes of c's status, and a func that stops
// them; nil (never ready) if c is not set.
func (c *watched) statusChanges() (<-chan nats.Status, func()) {
	nc := c.nc.Load()
	if nc == nil {
		return nil, func() {}
	}
	ch := nc.StatusChanged()
	return ch, func() { nc.RemoveStatusListener(ch) }
}

// watch returns check's error as soon as there is one, or nil when ctx
// ends.
func (l *liveness) watch(ctx context.Context) error {
	// Each change of a connection's status, as it happens; the ticker
	// notices when the bound has passed.
	worker, stopWorker := l.worker.statusChanges()
	defer stopWorker()
	console, stopConsole := l.console.statusChanges()
	defer stopConsole()
	var tick <-chan time.Time
	if l.bound > 0 {
		t := time.NewTicker(min(max(l.bound/10, 10*time.Millisecond), time.Second))
		defer t.Stop()
		tick = t.C
	}
	for {
		if err := l.check(time.Now()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-worker:
		case <-console:
		case <-tick:
		}
	}
}

// workerPaths are the worker's own endpoints; the console has the rest.
var workerPaths = map[string]bool{"/healthz": true, "/readyz": true, "/partitions": true, "/metrics": true}

func handler(current *atomic.Pointer[worker.Worker], con *atomic.Pointer[console.Console], live *liveness) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if c := con.Load(); c != nil && !workerPaths[r.URL.Path] {
			c.ServeHTTP(rw, r)
			return
		}
		if r.URL.Path == "/healthz" {
			if err := live.check(time.Now()); err != nil {
				http.Error(rw, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
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

// startTimeout is what is left of --connect-timeout once connecting took
// spent: the worker's start-up waits for the cluster to serve at most that
// (at least a moment, so that a first failure is seen before giving up);
// with no bound (0), none either.
func startTimeout(connect, spent time.Duration) time.Duration {
	if connect <= 0 {
		return -1
	}
	return max(connect-spent, time.Millisecond)
}

// explicit is v if flag name was set (on the command line or in the
// environment), else 0: the worker's default, sized to the memory limit.
func explicit(fs *pflag.FlagSet, name string, v int) int {
	if cli.Origin(fs, name) == "" {
		return 0
	}
	return v
}
