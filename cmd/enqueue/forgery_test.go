package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
	"github.com/orderly-dev/orderly/internal/roles"
	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/worker"
)

// roleEnv is a real server whose only users are one per role, with the
// permissions of package roles, and the order workflow running on a worker
// that connects as the worker role.
type roleEnv struct {
	url       string
	worker    *worker.Worker
	workerLog *natstest.Output // the worker's log, its connection's errors included
	serverLog *natstest.Output
}

func password(r roles.Role) string { return string(r) + "-secret" }

// creds are the enqueue flags that connect as role r.
func (e roleEnv) creds(r roles.Role) []string {
	return []string{"--nats-url", e.url, "--user", string(r), "--password", password(r)}
}

func (e roleEnv) conn(t *testing.T, r roles.Role) *client.Client {
	t.Helper()
	c, err := client.Connect(e.url, client.Config{}, nats.UserInfo(string(r), password(r)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// startRoles starts the server and the worker. When the test ends it checks
// that neither the worker's connection nor the server saw the worker do
// anything its role does not allow.
func startRoles(t *testing.T, paymentTimeout time.Duration) roleEnv {
	t.Helper()
	var users []embedded.User
	for _, r := range roles.All() {
		p, err := roles.For(r, "order")
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, embedded.User{Name: string(r), Password: password(r), Publish: p.Publish, Subscribe: p.Subscribe})
	}
	e := roleEnv{workerLog: &natstest.Output{}, serverLog: &natstest.Output{}}
	slog := zerolog.New(e.serverLog).Level(zerolog.InfoLevel)
	srv, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir(), Users: users, Logger: &slog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	e.url = srv.ClientURL()

	wlog := zerolog.New(e.workerLog).Level(zerolog.InfoLevel)
	nc, err := queue.Dial(context.Background(), queue.Config{
		URLs: []string{e.url}, User: string(roles.Worker), Password: password(roles.Worker),
		InboxPrefix: roles.WorkerInbox, Logger: &wlog,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	wf, err := order.NewWorkflow(order.Config{PaymentTimeout: paymentTimeout}, order.NewSimGateway(order.SimConfig{Latency: time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(nc, worker.Config{Queue: worker.QueueConfig{Partitions: 2}, ShutdownTimeout: 5 * time.Second, ID: "w1", Logger: &wlog}, wf)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatalf("start the worker as role worker: %v\n%s", err, e.workerLog.String())
	}
	e.worker = w
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		// Stop leaves the group, which is one more write to check.
		if err := nc.FlushWithContext(ctx); err != nil {
			t.Error(err)
		}
		for name, out := range map[string]*natstest.Output{"worker": e.workerLog, "server": e.serverLog} {
			for line := range strings.Lines(out.String()) {
				if strings.Contains(strings.ToLower(line), "violation") && (name == "worker" || strings.Contains(line, `"worker"`)) {
					t.Errorf("the worker did something its role does not allow (%s log): %s", name, line)
				}
			}
		}
	})
	return e
}

// TestForgeryProducerCanDoWhatEnqueueNeeds: with only the producer role,
// enqueue publishes, waits, reads a status, watches and publishes a file;
// with the operator role it also lists and replays dead letters, which a
// producer may not.
func TestForgeryProducerCanDoWhatEnqueueNeeds(t *testing.T) {
	t.Parallel()
	e := startRoles(t, time.Minute)
	ctx := context.Background()
	prod, op := e.creds(roles.Producer), e.creds(roles.Operator)
	run := func(creds []string, args ...string) (string, string, int) {
		t.Helper()
		return runCLI(t, ctx, append(args, creds...)...)
	}
	mustRun := func(creds []string, args ...string) string {
		t.Helper()
		out, errOut, code := run(creds, args...)
		if code != 0 {
			t.Fatalf("enqueue %v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
		return out
	}

	if out := mustRun(prod, "o1", "start_processing", `{"amount":12}`, "--wait"); !strings.Contains(out, "o1 processing") {
		t.Fatalf("--wait: %q", out)
	}
	if out := mustRun(prod, "o1", "request_payment", "--wait", "--id", "pay-o1"); !strings.Contains(out, "awaiting_payment") {
		t.Fatalf("--wait: %q", out)
	}
	// The same job again: a duplicate, answered from the stored state.
	if out := mustRun(prod, "o1", "request_payment", "--wait", "--id", "pay-o1"); !strings.Contains(out, "awaiting_payment") {
		t.Fatalf("duplicate --wait: %q", out)
	}
	var rec struct{ Key, State string }
	if err := json.Unmarshal([]byte(mustRun(prod, "status", "o1", "--json")), &rec); err != nil || rec.State != "awaiting_payment" {
		t.Fatalf("status: %+v %v", rec, err)
	}

	// watch, while another job completes the order.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wout, werr := newSyncBuffer(), newSyncBuffer()
	watched := make(chan int, 1)
	go func() {
		cmd := command{stdout: wout, stderr: werr, getenv: noEnv}
		watched <- exitCode(cmd.run(wctx, append([]string{"watch", "o1"}, prod...)))
	}()
	werr.waitFor(t, "watching orderly.status.order.o1")
	mustRun(prod, "o1", "confirm_payment", "--wait")
	wout.waitFor(t, "-> completed")
	cancel()
	if code := natstest.Recv(t, watched, natstest.Timeout, "watch to end after its cancellation"); code != 0 {
		t.Fatalf("watch: exit %d, stderr %q", code, werr.String())
	}

	// The key's history, and a watch that replays it.
	if out := mustRun(prod, "history", "o1"); strings.Count(out, "\n") != 6 || !strings.Contains(out, "-> completed (version 6)") {
		t.Fatalf("history: %q", out)
	}
	if out := mustRun(prod, "watch", "o1", "--all", "--timeout", "2s"); !strings.Contains(out, "idle -> processing (version 1)") || !strings.Contains(out, "-> completed (version 6)") {
		t.Fatalf("watch --all: %q", out)
	}

	// A file of events.
	if _, errOut, code := runStdin(t, ctx, strings.NewReader(`{"key":"o2","event":"start_processing"}`+"\n"), append([]string{"--file", "-"}, prod...)...); code != 0 {
		t.Fatalf("--file: exit %d, %s", code, errOut)
	}

	// An event the workflow does not know is dead-lettered; the operator
	// lists and replays it (it comes back: still unknown).
	if _, _, code := run(prod, "o3", "no_such_event", "--wait"); code != 1 {
		t.Fatalf("an unknown event: exit %d, want 1", code)
	}
	var dl struct {
		Seq    uint64 `json:"seq"`
		Key    string `json:"key"`
		Reason string `json:"reason"`
	}
	out := mustRun(op, "dlq", "list", "--json")
	if err := json.Unmarshal([]byte(out), &dl); err != nil || dl.Key != "o3" {
		t.Fatalf("dlq list: %q %v", out, err)
	}
	mustRun(op, "dlq", "replay", fmt.Sprint(dl.Seq))
	mustRun(op, "dlq", "replay", "--all")

	// A producer may not look at dead letters, nor replay them. It may
	// count them (enqueue stats), so with none stored it would find "no
	// dead letters" without reading any: wait until the replayed one is
	// back (still unknown).
	opc, deadline := e.conn(t, roles.Operator), time.Now().Add(20*time.Second)
	for dls, err := opc.DeadLetters(ctx, "order", 0); err != nil || len(dls) == 0; dls, err = opc.DeadLetters(ctx, "order", 0) {
		if time.Now().After(deadline) {
			t.Fatalf("the replayed dead letter is not back after 20s: %d, %v", len(dls), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, args := range [][]string{{"dlq", "list"}, {"dlq", "replay", "--all"}} {
		_, errOut, code := run(prod, append(args, "--timeout", "2s")...)
		if code != 1 || !strings.Contains(errOut, "Permissions Violation") {
			t.Errorf("a producer's enqueue %v: exit %d, stderr %q; want 1 and a permissions violation", args, code, errOut)
		}
	}
}

// violations collects the permission violations the server reports to a
// raw client.
type violations struct {
	mu   sync.Mutex
	seen []string
	ch   chan struct{}
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return
	}
	v.mu.Lock()
	v.seen = append(v.seen, err.Error())
	v.mu.Unlock()
	select {
	case v.ch <- struct{}{}:
	default:
	}
}

// waitFor waits until a violation mentioning subject was reported.
func (v *violations) waitFor(t *testing.T, subject string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		v.mu.Lock()
		for _, s := range v.seen {
			if strings.Contains(s, `"`+subject+`"`) {
				v.mu.Unlock()
				return
			}
		}
		v.mu.Unlock()
		select {
		case <-v.ch:
		case <-timeout:
			t.Fatalf("no permissions violation for %s; seen %v", subject, v.seen)
		}
	}
}

// TestForgeryProducerCannotWriteWhatTheWorkerWrites: every write that only
// the worker may make, tried with the producer role, is refused by the
// server with a permissions violation, and the worker's keys, statuses and
// dead letters are as they were.
func TestForgeryProducerCannotWriteWhatTheWorkerWrites(t *testing.T) {
	t.Parallel()
	e := startRoles(t, time.Minute)
	ctx := context.Background()
	prod := e.conn(t, roles.Producer)
	if _, st, err := prod.PublishAndWait(ctx, "order", "o1", contract.Envelope{Event: "start_processing"}); err != nil || st.To != "processing" {
		t.Fatalf("%+v %v", st, err)
	}
	if _, st, err := prod.PublishAndWait(ctx, "order", "o1", contract.Envelope{Event: "request_payment"}); err != nil || st.To != "awaiting_payment" {
		t.Fatalf("%+v %v", st, err)
	}
	before, err := prod.State(ctx, "order", "o1")
	if err != nil {
		t.Fatal(err)
	}
	statuses := make(chan contract.Status, 16)
	sub, err := prod.Subscribe("order", "o1", func(st contract.Status) { statuses <- st })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	v := &violations{ch: make(chan struct{}, 1)}
	nc, err := nats.Connect(e.url, nats.UserInfo(string(roles.Producer), password(roles.Producer)), nats.ErrorHandler(v.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(subject, body string, hdr ...string) *nats.Msg {
		m := nats.NewMsg(subject)
		m.Data = []byte(body)
		for i := 0; i < len(hdr); i += 2 {
			m.Header.Set(hdr[i], hdr[i+1])
		}
		return m
	}
	soon := time.Now().Add(time.Second).UTC().Format(time.RFC3339)
	timeout := `{"event":"payment_timeout"}`
	for _, m := range []*nats.Msg{
		// A timer schedule that fires early, and one that replaces (so
		// cancels) the real one.
		msg("orderly.timers.order.timeout.o1", timeout, "Nats-Schedule", "@at "+soon,
			"Nats-Schedule-Target", "orderly.timers.order.fired.timeout.o1", contract.HeaderTimerKind, "timeout", contract.HeaderTimerVisit, fmt.Sprint(before.Version)),
		// A fired timer, as the server's scheduler writes it.
		msg("orderly.timers.order.fired.timeout.o1", timeout, "Nats-Scheduler", "orderly.timers.order.timeout.o1",
			"Nats-Schedule-Next", "purge", contract.HeaderTimerKind, "timeout", contract.HeaderTimerVisit, fmt.Sprint(before.Version)),
		// A status saying the job is done, and one saying a job is
		// scheduled.
		msg("orderly.status.order.o1", `{"workflow":"order","key":"o1","job_id":"x","event":"confirm_payment","from":"awaiting_payment","to":"completed","version":99,"settled":true}`),
		msg("orderly.status.order.o1", `{"workflow":"order","key":"o1","job_id":"x","event":"confirm_payment","from":"awaiting_payment","to":"awaiting_payment","version":2,"settled":false,"scheduled_for":"2030-01-01T00:00:00Z"}`),
		// A firing of a recurring schedule as a test clock makes it (its
		// job id in Orderly's headers, no Nats-Scheduler), and a delayed
		// event fired: only the server writes where they fire.
		msg("orderly.schedules.order.fired.every.nightly.o1", `{"event":"confirm_payment"}`,
			contract.HeaderScheduleName, "nightly", contract.HeaderScheduleTime, "2030-01-01T00:00:00Z", contract.HeaderSchedule, "@daily"),
		msg("orderly.schedules.order.fired.at.o1", `{"event":"confirm_payment"}`, contract.HeaderDelayedJobID, "x"),
		// A state record, and a dead letter that a replay would apply.
		msg("$KV.orderly_state_order.o1", `{"state":"completed","version":99,"data":{}}`),
		msg("orderly.dlq.order.o1", `{"event":"confirm_payment"}`),
		// Where fired timers are stored; the stream takes no client publish
		// there either.
		msg("orderly.events.order.0.timer.o1", timeout, contract.HeaderTimerKind, "timeout"),
		// The streams and the consumers behind them.
		msg("$JS.API.STREAM.MSG.DELETE.KV_orderly_state_order", `{"seq":1}`),
		msg("$JS.API.STREAM.PURGE.ORDERLY_TIMERS_ORDER", `{}`),
		msg("$JS.API.STREAM.UPDATE.ORDERLY_EVENTS_ORDER", `{"name":"ORDERLY_EVENTS_ORDER"}`),
		msg("$JS.API.CONSUMER.CREATE.ORDERLY_EVENTS_ORDER.thief", `{"stream_name":"ORDERLY_EVENTS_ORDER","config":{"durable_name":"thief"}}`),
		msg("$JS.API.CONSUMER.MSG.NEXT.ORDERLY_EVENTS_ORDER.orderly_order_p0", `{"batch":1}`),
	} {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := nc.RequestMsgWithContext(pctx, m)
		cancel()
		if err == nil {
			t.Errorf("%s: answered", m.Subject)
		}
		v.waitFor(t, m.Subject)
	}
	// Nor may it read what the worker pulls.
	if _, err := nc.SubscribeSync(roles.WorkerInbox + ".>"); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, roles.WorkerInbox+".>")
	// It may count the dead letters (enqueue stats), not read them.
	if s, err := js.Stream(ctx, "ORDERLY_DLQ_ORDER"); err != nil {
		t.Errorf("a producer cannot count the dead letters: %v", err)
	} else if _, err := s.GetMsg(ctx, 1); err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("a producer read a dead letter: %v", err)
	} else {
		v.waitFor(t, "$JS.API.STREAM.MSG.GET.ORDERLY_DLQ_ORDER")
	}

	// A producer may write the record of a delayed event (it does for
	// each one, and for a cancel): one with no schedule behind it is not
	// announced as scheduled.
	forged, err := json.Marshal(contract.ScheduledJob{ID: "forged", Key: "o1", Event: "confirm_payment", Due: time.Now().Add(time.Hour), State: contract.JobScheduled})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "$KV.orderly_jobs_order."+contract.ScheduledJobKey("forged"), forged); err != nil {
		t.Fatalf("a producer's record of a delayed event: %v", err)
	}

	// The worker's records are as they were: the forged timer would have
	// fired by now; no status, no dead letter, the same state.
	select {
	case st := <-statuses:
		t.Errorf("a status after the forgeries: %+v", st)
	case <-time.After(3 * time.Second): // a negative check: the forged timer was due in 1-2s
	}
	after, err := prod.State(ctx, "order", "o1")
	if err != nil {
		t.Fatal(err)
	}
	if after.State != before.State || after.Version != before.Version || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Errorf("state before %+v, after %+v", before, after)
	}
	if dls, err := e.conn(t, roles.Operator).DeadLetters(ctx, "order", 0); err != nil || len(dls) != 0 {
		t.Errorf("dead letters %+v %v", dls, err)
	}
	// The real timer is still armed and the key still takes events.
	if _, st, err := prod.PublishAndWait(ctx, "order", "o1", contract.Envelope{Event: "confirm_payment"}); err != nil || st.To != "completed" {
		t.Fatalf("%+v %v", st, err)
	}
}

// TestForgeryWorkerRoleRunsTheOrderWorkflow: a worker with only its role
// runs everything the order workflow does: provisioning, events, slow work,
// statuses, state, a timeout, a dead letter, the group's members and
// leaving it; startRoles checks that it never stepped outside its role.
func TestForgeryWorkerRoleRunsTheOrderWorkflow(t *testing.T) {
	t.Parallel()
	e := startRoles(t, 2*time.Second)
	ctx := context.Background()
	prod := e.conn(t, roles.Producer)
	timedOut := make(chan contract.Status, 16)
	sub, err := prod.Subscribe("order", "late", func(st contract.Status) { timedOut <- st })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	for _, step := range []struct{ key, event, want string }{
		{"done", "start_processing", "processing"},
		{"done", "request_payment", "awaiting_payment"},
		{"done", "confirm_payment", "completed"},
		{"late", "start_processing", "processing"},
		{"late", "request_payment", "awaiting_payment"},
	} {
		if _, st, err := prod.PublishAndWait(ctx, "order", step.key, contract.Envelope{Event: step.event}); err != nil || st.To != step.want {
			t.Fatalf("%s %s: %+v %v", step.key, step.event, st, err)
		}
	}
	// The payment timeout: a timer, scheduled and fired.
	deadline := time.After(20 * time.Second)
	for fired := false; !fired; {
		select {
		case st := <-timedOut:
			fired = st.Event == "payment_timeout" && st.To == "failed"
		case <-deadline:
			t.Fatal("the payment timeout never fired")
		}
	}
	if _, st, err := prod.PublishAndWait(ctx, "order", "bad", contract.Envelope{Event: "no_such_event"}); err != nil || st.Error == nil {
		t.Fatalf("%+v %v", st, err)
	}
	// An event no partition delivers (a wildcard for its key), which the
	// worker sweeps out of the events stream to the dead letters.
	pjs, err := jetstream.New(prod.Conn())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pjs.Publish(ctx, "orderly.events.order.*", []byte(`{"event":"start_processing"}`)); err != nil {
		t.Fatal(err)
	}
	op := e.conn(t, roles.Operator)
	deadline = time.After(20 * time.Second)
	for {
		dls, err := op.DeadLetters(ctx, "order", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) == 2 {
			if dls[0].Key != "bad" || dls[1].Subject != "orderly.events.order.*" {
				t.Fatalf("dead letters %+v", dls)
			}
			break
		}
		select {
		case <-deadline:
			t.Fatalf("dead letters %+v, want the unknown event and the stray", dls)
		case <-time.After(100 * time.Millisecond): // the sweep runs every second
		}
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ojs, err := jetstream.New(op.Conn())
	if err != nil {
		t.Fatal(err)
	}
	if s, err := ojs.Stream(ictx, "ORDERLY_EVENTS_ORDER"); err == nil {
		t.Errorf("the operator read the events stream: %+v", s.CachedInfo())
	}
	if !e.worker.Ready() {
		t.Error("the worker is not ready")
	}
}
