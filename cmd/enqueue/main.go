// Command enqueue is Orderly's command-line producer and inspector: it
// publishes events (one, or many from a JSON lines file), follows a job until
// it settles, prints a key's state, watches status changes, and lists and
// replays dead letters.
//
// Run "enqueue --help" for the usage. Exit status: 0 ok; 1 a runtime failure
// (rejected or failed job, queue full, no server, bad key or data, timeout,
// no state); 2 a usage error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
	// The IANA time zones of schedules (--tz), also where the system has
	// none: the embedded server and enqueue read them the same way.
	_ "time/tzdata"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/telemetry"
	"github.com/orderly-dev/orderly/internal/tracing"
)

const usageHead = `Usage:
  enqueue [flags] KEY EVENT [DATA_JSON]   publish an event and print its job id
          (--in DURATION | --at RFC3339: deliver it then; the job id is printed at once)
  enqueue [flags] --file FILE             publish JSON lines {"key","event","data","id"} (FILE - is stdin)
  enqueue status [flags] KEY              print the key's current state
  enqueue watch [flags] [KEY]             print status changes as they happen (every key without KEY)
          (--since DURATION | --all: first the stored statuses of the last DURATION, or all of them)
  enqueue history [flags] KEY             print the key's stored statuses, oldest first, as watch does
  enqueue dlq list [flags]                list dead letters, oldest first: SEQ KEY REASON JOB_ID AT
  enqueue dlq replay [flags] SEQ|--all    republish dead letters to their keys (new job ids) and delete them
  enqueue cancel [flags] JOB_ID           cancel a delayed event no worker has taken yet
  enqueue schedule add [flags] NAME KEY EVENT [DATA_JSON] (--every DURATION | --cron "EXPR" [--tz ZONE])
  enqueue schedule list [flags]           list recurring schedules: NAME KEY EVENT SPEC NEXT
  enqueue schedule rm [flags] NAME        remove a recurring schedule
  enqueue stats [flags]                   count keys by state, pending work, delayed events, dead letters
                                          (every workflow, or the one --workflow names)
  enqueue keys --state STATE [--older-than DURATION] [--limit N] [flags]
                                          list the keys in STATE, oldest first: KEY VERSION SINCE
  enqueue stuck [--older-than DURATION] [--limit N] [flags]
                                          keys whose slow work, or non-terminal state, has not moved for DURATION (default 10m)

Flags may stand before or after the arguments. "status", "watch",
"history", "dlq", "cancel", "schedule", "stats", "keys" and "stuck" are
reserved: publish to a key of that name with "enqueue [flags] -- status EVENT".
The connection flags, --workflow and --log-level are also read from
ORDERLY_<FLAG> (dashes as underscores); --nats-url also from NATS_URL.
Exit status: 0 ok, 1 failure (rejected or failed job, queue full, no server,
bad key or data, timeout, no state), 2 usage error.

Flags:
`

const usageHint = "usage: enqueue [flags] KEY EVENT [DATA_JSON] | --file FILE | status KEY | watch [KEY] | history KEY | dlq list | dlq replay SEQ|--all | cancel JOB_ID | schedule add|list|rm | stats | keys --state STATE | stuck (see enqueue --help)"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := exitCode(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	stop()
	os.Exit(code)
}

// run is the whole command, with the process's environment.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return command{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}.run(ctx, args)
}

// exitCode maps run's error to the exit status.
func exitCode(err error) int {
	var u *cli.UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &u):
		return 2
	default:
		return 1
	}
}

// command is one invocation's surroundings, injected so tests control them.
type command struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

type options struct {
	conn               cli.ConnFlags
	workflow, logLevel string
	id, file           string
	json, wait         bool
	timeout            time.Duration
	since              time.Duration // watch
	timeoutSet         bool
	window             int
	limit              int      // dlq list
	all                bool     // dlq replay, watch
	seq                uint64   // dlq replay SEQ
	sub                string   // "", "status", "watch", "history", "dlq", "cancel" or "schedule"
	args               []string // positional arguments after sub
	time               timeOptions
	otel               bool
	inv                inventoryOptions // stats, keys, stuck
}

// run executes args and reports a failure as one line on stderr (plus a
// usage hint for a usage error).
func (c command) run(ctx context.Context, args []string) error {
	err := c.dispatch(ctx, args)
	if err != nil {
		fmt.Fprintf(c.stderr, "enqueue: %v\n", err)
		var u *cli.UsageError
		if errors.As(err, &u) {
			fmt.Fprintln(c.stderr, usageHint)
		}
	}
	return err
}

// flagSets returns enqueue's flags, bound to o: all of them (fs), and env,
// those also read from the environment: how to reach NATS and which
// workflow, not per-call flags such as --id. docs/configuration.md is
// generated from them.
func (o *options) flagSets() (fs, env *pflag.FlagSet, version *bool) {
	env = pflag.NewFlagSet("enqueue", pflag.ContinueOnError)
	// Shorter than the worker's 30s: a command line wants a quick answer.
	o.conn.ConnectTimeout = 2 * time.Second
	o.conn.Register(env, "NATS server URL (default nats://127.0.0.1:4222)")
	env.StringVar(&o.workflow, "workflow", "order", "workflow name")
	env.StringVar(&o.logLevel, "log-level", "warn", "log level: trace, debug, info, warn or error")
	env.BoolVar(&o.otel, "otel", false, "trace with OpenTelemetry: a root span for the command and one per event published, whose trace the worker continues; exported over OTLP as the standard OTEL_* variables say: to localhost:4318 unless OTEL_EXPORTER_OTLP_ENDPOINT names a receiver, which alone also turns tracing on")
	fs = pflag.NewFlagSet("enqueue", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.AddFlagSet(env)
	fs.BoolVar(&o.json, "json", false, "machine-readable output: JSON (watch, history, dlq list, schedule list, stats, keys, stuck: one JSON object per line)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "bound on publishing, --wait and dlq (0: none); for watch, how long to watch (unset: until interrupted)")
	fs.StringVar(&o.id, "id", "", "job id and idempotency key: 1-256 bytes of UTF-8, no control characters, no leading or trailing spaces (default: a new unique id)")
	fs.BoolVar(&o.wait, "wait", false, "follow the job until it settles and print its final state")
	fs.StringVar(&o.file, "file", "", "publish the JSON lines of `FILE` (- for stdin) instead of KEY EVENT")
	fs.IntVar(&o.window, "window", 1024, "with --file: the most publishes awaiting their acknowledgement (1-4000)")
	fs.IntVar(&o.limit, "limit", 0, "dlq list: the most dead letters to list (0: all); keys, stuck: the most keys to list (default 100)")
	fs.BoolVar(&o.all, "all", false, "dlq replay: replay every dead letter; watch: first print every stored status")
	fs.DurationVar(&o.since, "since", 0, "watch: first print the statuses stored in the last `DURATION` (e.g. 10m, 24h)")
	o.time.register(fs)
	o.inv.register(fs)
	version = cli.VersionFlag(fs)
	return fs, env, version
}

func (c command) parse(args []string) (options, error) {
	var o options
	fs, env, version := o.flagSets()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(c.stdout, usageHead+fs.FlagUsages())
			return o, err
		}
		return o, &cli.UsageError{Err: err}
	}
	if *version {
		cli.PrintVersion(c.stdout, "enqueue")
		return o, pflag.ErrHelp // done, as after --help
	}
	if err := cli.ApplyEnv(env, c.getenv); err != nil {
		return o, cli.Usagef("%v", err)
	}
	if err := o.conn.Validate(); err != nil {
		return o, err
	}
	o.args = fs.Args()
	if len(o.args) > 0 && fs.ArgsLenAtDash() != 0 && slices.Contains(subcommands, o.args[0]) {
		o.sub, o.args = o.args[0], o.args[1:]
	}
	o.timeoutSet = fs.Changed("timeout")
	for _, name := range []string{"id", "wait", "file", "window"} {
		if fs.Changed(name) && o.sub != "" {
			return o, cli.Usagef("--%s does not apply to %s", name, o.sub)
		}
	}
	for _, f := range [...]struct{ name, cmd string }{{"limit", "list"}, {"all", "replay"}} {
		if f.name == "all" && o.sub == "watch" || f.name == "limit" && (o.sub == "keys" || o.sub == "stuck") {
			continue
		}
		if fs.Changed(f.name) && (o.sub != "dlq" || len(o.args) == 0 || o.args[0] != f.cmd) {
			if f.name == "all" {
				return o, cli.Usagef("--all applies only to dlq replay and watch")
			}
			return o, cli.Usagef("--limit applies only to dlq list, keys and stuck")
		}
	}
	if err := o.inv.check(fs, &o); err != nil {
		return o, err
	}
	if err := o.checkWatch(fs); err != nil {
		return o, err
	}
	if err := o.time.check(fs, &o); err != nil {
		return o, err
	}
	return o, o.validate()
}

func (o *options) validate() error {
	n := len(o.args)
	switch {
	case o.sub == "status" && n != 1:
		return cli.Usagef("status takes one KEY, got %d arguments", n)
	case o.sub == "watch" && n > 1:
		return cli.Usagef("watch takes at most one KEY, got %d arguments", n)
	case o.sub == "history" && n != 1:
		return cli.Usagef("history takes one KEY, got %d arguments", n)
	case o.sub == "" && o.file != "" && n > 0:
		return cli.Usagef("--file takes no KEY EVENT arguments, got %d", n)
	case o.sub == "" && o.file != "" && (o.wait || o.id != ""):
		return cli.Usagef("--wait and --id do not apply to --file (give each line its id)")
	case o.sub == "" && o.file == "" && (n < 2 || n > 3):
		return cli.Usagef("want KEY EVENT [DATA_JSON], got %d arguments", n)
	case o.window < 1 || o.window > 4000:
		return cli.Usagef("--window %d: want 1 to 4000", o.window)
	case o.timeout < 0:
		return cli.Usagef("--timeout %s: must not be negative", o.timeout)
	case o.sub == "dlq":
		return o.validateDLQ()
	case o.sub == "cancel" && n != 1:
		return cli.Usagef("cancel takes one JOB_ID, got %d arguments", n)
	case o.sub == "schedule":
		return o.validateSchedule()
	}
	if o.sub == "watch" && !o.timeoutSet {
		o.timeout = 0
	}
	return nil
}

func (c command) dispatch(ctx context.Context, args []string) (err error) {
	o, err := c.parse(args)
	if errors.Is(err, pflag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log, err := cli.Logger(c.stderr, o.logLevel)
	if err != nil {
		return cli.Usagef("--log-level: %v", err)
	}
	// Refuse bad input before reaching for the broker.
	if err := contract.ValidateWorkflow(o.workflow); err != nil {
		return err
	}
	if len(o.args) > 0 && o.file == "" && (o.sub == "" || o.sub == "status" || o.sub == "watch" || o.sub == "history") {
		if err := contract.ValidateKey(o.args[0]); err != nil {
			return err
		}
	}
	if err := o.time.refuse(&o, time.Now()); err != nil {
		return err
	}
	if o.id != "" {
		if err := contract.ValidateJobID(o.id); err != nil {
			return err
		}
	}
	var data json.RawMessage
	if o.sub == "" && len(o.args) == 3 {
		if data = json.RawMessage(o.args[2]); !json.Valid(data) {
			return fmt.Errorf("DATA_JSON is not JSON: %s", o.args[2])
		}
	}

	tr, err := telemetry.Start(ctx, telemetry.Config{Flag: o.otel, Service: "orderly-enqueue", Getenv: c.getenv, Logger: &log})
	if err != nil {
		return cli.Usagef("%v", err)
	}
	defer func() {
		// A command line waits for its spans' export 2 s at most.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if serr := tr.Shutdown(sctx); serr != nil {
			log.Warn().Err(serr).Msg("tracing: spans not exported")
		}
	}()
	if tr.Provider != nil {
		var span trace.Span
		ctx, span = c.rootSpan(ctx, tr.Provider, o)
		defer func() {
			if err != nil {
				tracing.Fail(span, err)
			}
			span.End() // before the shutdown above exports it
		}()
	}

	// queue.Connect for the flags' connection options and its patient
	// first connect; the client on top does the rest.
	qc, err := queue.Connect(ctx, o.conn.Config("orderly-enqueue", &log))
	if err != nil {
		return err
	}
	defer qc.Close()
	conn, err := client.New(qc.NATS(), client.Config{TracerProvider: tr.Provider})
	if err != nil {
		return err
	}
	defer conn.Close()

	switch {
	case o.sub == "status":
		return c.status(ctx, conn, o)
	case o.sub == "watch":
		return c.watch(ctx, conn, o)
	case o.sub == "history":
		return c.history(ctx, conn, o)
	case o.sub == "dlq":
		return c.dlq(ctx, conn, o)
	case o.sub == "cancel":
		return c.cancel(ctx, conn, o)
	case o.sub == "schedule":
		return c.schedule(ctx, conn, o)
	case o.sub == "stats":
		return c.stats(ctx, conn, o)
	case o.sub == "keys":
		return c.keys(ctx, conn, o)
	case o.sub == "stuck":
		return c.stuck(ctx, conn, o)
	case o.file != "":
		return c.bulk(ctx, conn, o)
	}
	return c.publish(ctx, conn, o, contract.Envelope{Event: o.args[1], Data: data})
}

// rootSpan starts the command's span: a root, or the child of the span
// that TRACEPARENT (and TRACESTATE) name, as a script that traces may pass
// it on.
func (c command) rootSpan(ctx context.Context, tp trace.TracerProvider, o options) (context.Context, trace.Span) {
	name := o.sub
	switch {
	case name == "" && o.file != "":
		name = "publish --file"
	case name == "":
		name = "publish"
	}
	attrs := []attribute.KeyValue{tracing.Workflow.String(o.workflow)}
	if len(o.args) > 0 && (o.sub == "" || o.sub == "status" || o.sub == "watch" || o.sub == "history") {
		attrs = append(attrs, tracing.Key.String(o.args[0]))
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...)}
	parent := tracing.FromParent(ctx, c.getenv("TRACEPARENT"), c.getenv("TRACESTATE"))
	if !trace.SpanContextFromContext(parent).IsValid() {
		opts = append(opts, trace.WithNewRoot())
	}
	return tp.Tracer(tracing.Scope).Start(parent, "enqueue "+name, opts...)
}

func (c command) publish(ctx context.Context, conn *client.Client, o options, ev contract.Envelope) error {
	key, id, idOpt := o.args[0], o.id, client.WithJobID(o.id)
	if id == "" {
		// Known before the publish ends, for the messages below; used for
		// this publish alone, so the worker need not claim it.
		id = client.NewJobID()
		idOpt = client.WithMadeJobID(id)
	}
	ctx, cancel := withTimeout(ctx, o.timeout)
	defer cancel()
	var (
		ack client.PubAck
		st  contract.Status
		err error
	)
	opts := append([]client.PublishOption{idOpt}, o.time.publishOptions()...)
	if o.wait {
		ack, st, err = conn.PublishAndWait(ctx, o.workflow, key, ev, append(opts,
			client.WithProgress(func(st contract.Status) { c.printStatus(c.stderr, o.json, st) }))...)
	} else {
		ack, err = conn.Publish(ctx, o.workflow, key, ev, opts...)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("timed out after %s waiting for job %s", o.timeout, id)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("interrupted while waiting for job %s", id)
	case err != nil:
		return err
	}
	if ack.Duplicate {
		fmt.Fprintf(c.stderr, "duplicate: job %s was already stored%s; not stored again\n", id, original(ack))
	} else if !ack.Due.IsZero() && !o.json && !o.wait {
		fmt.Fprintf(c.stderr, "delayed: job %s is delivered to %s at %s\n", id, key, ack.Due.Format(time.RFC3339Nano))
	}
	if !o.wait {
		if o.json {
			out := map[string]any{
				"job_id": ack.ID, "key": key, "event": ev.Event, "sequence": ack.Sequence, "duplicate": ack.Duplicate,
			}
			if !ack.Due.IsZero() {
				out["due"] = ack.Due
			}
			if ack.Duplicate {
				orig := map[string]any{"key": ack.Key, "sequence": ack.Sequence, "taken": ack.Taken}
				if !ack.At.IsZero() {
					orig["at"] = ack.At
				}
				out["original"] = orig
			}
			return json.NewEncoder(c.stdout).Encode(out)
		}
		_, err := fmt.Fprintln(c.stdout, ack.ID)
		return err
	}
	if o.json {
		err = json.NewEncoder(c.stdout).Encode(st)
	} else {
		state := st.To
		if state == "" {
			state = "(no state)"
		}
		line := fmt.Sprintf("%s %s (version %d)", st.Key, state, st.Version)
		if st.Error != nil {
			line += " error " + st.Error.Error()
		}
		_, err = fmt.Fprintln(c.stdout, line)
	}
	if err != nil {
		return err
	}
	if st.Error != nil {
		return fmt.Errorf("job %s ended in %s: %v", id, st.To, st.Error)
	}
	return nil
}

// original describes the original job of a duplicate: " for key K
// (sequence N, taken by a worker at T)".
func original(ack client.PubAck) string {
	if ack.Key == "" {
		return fmt.Sprintf(" (sequence %d, no longer stored)", ack.Sequence)
	}
	if !ack.Due.IsZero() && !ack.Taken {
		return fmt.Sprintf(" for key %s (delayed, due %s)", ack.Key, ack.Due.Format(time.RFC3339))
	}
	when := "queued since"
	if ack.Taken {
		when = "taken by a worker at"
	}
	return fmt.Sprintf(" for key %s (sequence %d, %s %s)", ack.Key, ack.Sequence, when, ack.At.Format(time.RFC3339))
}

func (c command) status(ctx context.Context, conn *client.Client, o options) error {
	key := o.args[0]
	ctx, cancel := withTimeout(ctx, o.timeout)
	defer cancel()
	rec, err := conn.State(ctx, o.workflow, key)
	delayed, derr := conn.DelayedEvents(ctx, o.workflow, key)
	if errors.Is(derr, client.ErrNotProvisioned) {
		delayed, derr = nil, nil // a workflow provisioned before delayed events
	}
	if errors.Is(err, client.ErrNoState) {
		msg := fmt.Sprintf("no state for key %s (no event processed yet)", key)
		for _, d := range delayed {
			msg += fmt.Sprintf("; delayed event=%s job=%s due=%s", d.Event, d.ID, d.Due.Format(time.RFC3339Nano))
		}
		return errors.New(msg)
	}
	if err != nil {
		return err
	}
	if derr != nil {
		return derr
	}
	if o.json {
		// The contract's fields only: Applied and Entered are the runtime's
		// bookkeeping, not the key's state. Delayed: what waits for its time.
		type delayedJSON struct {
			JobID string    `json:"job_id"`
			Event string    `json:"event"`
			Due   time.Time `json:"due"`
		}
		out := struct {
			Key       string                 `json:"key"`
			State     string                 `json:"state"`
			Version   uint64                 `json:"version"`
			Data      json.RawMessage        `json:"data"`
			UpdatedAt time.Time              `json:"updated_at"`
			Pending   []contract.PendingWork `json:"pending,omitempty"`
			Delayed   []delayedJSON          `json:"delayed,omitempty"`
		}{Key: key, State: rec.State, Version: rec.Version, Data: rec.Data, UpdatedAt: rec.UpdatedAt, Pending: rec.Pending}
		for _, d := range delayed {
			out.Delayed = append(out.Delayed, delayedJSON{d.ID, d.Event, d.Due})
		}
		return json.NewEncoder(c.stdout).Encode(out)
	}
	data := string(rec.Data)
	if data == "" {
		data = "null"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s version=%d updated_at=%s data=%s\n",
		key, rec.State, rec.Version, rec.UpdatedAt.Format(time.RFC3339Nano), data)
	// Slow work not done yet, one line each: what runs, which attempt, since
	// when (and, after a failed attempt, when the next is due and why).
	for _, p := range rec.Pending {
		fmt.Fprintf(&b, "  pending action=%s attempt=%d", p.Action, max(p.Attempt, 1))
		if !p.Since.IsZero() {
			fmt.Fprintf(&b, " since=%s", p.Since.Format(time.RFC3339Nano))
		}
		if !p.NextAttemptAt.IsZero() {
			fmt.Fprintf(&b, " next_attempt_at=%s", p.NextAttemptAt.Format(time.RFC3339Nano))
		}
		fmt.Fprintf(&b, " job=%s", p.JobID)
		if p.LastError != "" {
			fmt.Fprintf(&b, " last_error=%q", p.LastError)
		}
		b.WriteByte('\n')
	}
	// Delayed events not yet fired, one line each.
	for _, d := range delayed {
		fmt.Fprintf(&b, "  delayed event=%s job=%s due=%s\n", d.Event, d.ID, d.Due.Format(time.RFC3339Nano))
	}
	_, err = io.WriteString(c.stdout, b.String())
	return err
}

func (c command) watch(ctx context.Context, conn *client.Client, o options) error {
	ctx, cancel := withTimeout(ctx, o.timeout)
	defer cancel()
	key := ""
	if len(o.args) == 1 {
		key = o.args[0]
	}
	opts := []client.WatchOption{client.WatchReady(func() {
		fmt.Fprintf(c.stderr, "watching %s (Ctrl-C to stop)\n", contract.StatusSubject(o.workflow, key))
	})}
	switch {
	case o.all:
		opts = append(opts, client.WatchAll())
	case o.since > 0:
		opts = append(opts, client.WatchSince(o.since))
	}
	err := conn.Watch(ctx, o.workflow, key, func(st contract.Status) { c.printStatus(c.stdout, o.json, st) }, opts...)
	if errors.Is(err, client.ErrNoHistory) {
		return fmt.Errorf("watch --since/--all: %w", err)
	}
	return err
}

// withTimeout bounds ctx by d; d = 0 means no bound.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// printStatus writes st as one JSON line or one human line.
func (c command) printStatus(w io.Writer, asJSON bool, st contract.Status) {
	if asJSON {
		_ = json.NewEncoder(w).Encode(st)
		return
	}
	var b strings.Builder
	if !st.At.IsZero() {
		b.WriteString(st.At.Format(time.RFC3339Nano) + " ")
	}
	fmt.Fprintf(&b, "%s %s -> %s (version %d) event=%s job=%s", st.Key, st.From, st.To, st.Version, st.Event, st.JobID)
	if st.Action != "" {
		fmt.Fprintf(&b, " action=%s", st.Action)
	}
	if st.Attempt > 0 {
		fmt.Fprintf(&b, " attempt=%d", st.Attempt)
	}
	if !st.ScheduledFor.IsZero() {
		fmt.Fprintf(&b, " scheduled_for=%s", st.ScheduledFor.Format(time.RFC3339Nano))
	}
	if st.Settled {
		b.WriteString(" settled")
	}
	if st.Error != nil {
		fmt.Fprintf(&b, " error=%v", st.Error)
	}
	fmt.Fprintln(w, b.String())
}
