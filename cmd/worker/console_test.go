package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/embedded"
	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/roles"
)

// TestWebConsoleServedByTheWorker: item 4's wiring. The worker serves the
// console at / on --http beside its own endpoints, which answer as before;
// ORDERLY_CONSOLE_TOKEN (as --console-token) makes write actions need the
// token, and a live view ends when the worker stops.
func TestWebConsoleServedByTheWorker(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	w := runInProcess(t, map[string]string{"ORDERLY_CONSOLE_TOKEN": "tok", "ORDERLY_NATS_URL": srv.ClientURL()},
		"--http", "127.0.0.1:0", "--partitions", "2")
	base := "http://" + httpAddrOf(t, w.out)
	waitHTTP(t, base+"/readyz", 200, 30*time.Second)

	page := func(path string) string {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d\n%s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	if body := page("/"); !strings.Contains(body, "<svg") || !strings.Contains(body, "awaiting_payment") || !strings.Contains(body, "writes need the token") {
		t.Fatalf("/ is not the console's overview with the order diagram:\n%s", body)
	}
	if body := page("/partitions"); !strings.Contains(body, `"order":[0,1]`) {
		t.Fatalf("/partitions: %s", body)
	}
	if body := page("/metrics"); !strings.Contains(body, "orderly_build_info") {
		t.Fatal("/metrics lost")
	}
	if body := page("/healthz"); strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz: %q", body)
	}

	// A write without the token: refused.
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(page("/w/order/keys/o-1"))
	if m == nil {
		t.Fatal("no write form on the key page")
	}
	resp, err := http.PostForm(base+"/w/order/keys/o-1/events", url.Values{"csrf": {m[1]}, "event": {"start_processing"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("write without the token: %d, want 403", resp.StatusCode)
	}

	// A live view open when the worker stops ends, and the worker exits.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/live/overview", nil)
	live, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Body.Close()
	w.cancel()
	if err := w.exited(t, 30*time.Second); err != nil {
		t.Fatalf("run: %v", err)
	}
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, live.Body); ended <- err }()
	natstest.Recv(t, ended, 20*time.Second, "the live view to end with the worker")
}

// TestWebConsoleActsAsOperatorUnderRoles: item 4 under the permission
// roles. The worker's own user may not send events, read dead letters or
// follow statuses, so the console acts through a connection of its own as
// an operator: with the embedded server, its --operator-user by default;
// with a NATS server, --console-user and --console-password (here from
// ORDERLY_CONSOLE_USER and ORDERLY_CONSOLE_PASSWORD). Through the
// console's HTTP endpoints an event is sent, a dead letter replayed and a
// key's live timeline gets the statuses, and the overview's figures are
// all read. Without console credentials the console says plainly what its
// user may not do.
func TestWebConsoleActsAsOperatorUnderRoles(t *testing.T) {
	t.Parallel()
	t.Run("embedded server: its operator user", func(t *testing.T) {
		t.Parallel()
		w := runInProcess(t, nil, "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--partitions", "2",
			"--user", "w", "--password", "w-secret", "--operator-user", "op", "--operator-password", "op-secret")
		natsURL := "nats://" + natsAddrOf(t, w.out)
		base := "http://" + httpAddrOf(t, w.out)
		waitHTTP(t, base+"/readyz", 200, 30*time.Second)
		consoleActs(t, base, natsURL)
	})
	t.Run("NATS server: --console-user from the environment", func(t *testing.T) {
		t.Parallel()
		srv := rolesServer(t)
		w := runInProcess(t, map[string]string{
			"ORDERLY_NATS_URL": srv.ClientURL(), "ORDERLY_USER": "w", "ORDERLY_PASSWORD": "w-secret",
			"ORDERLY_CONSOLE_USER": "op", "ORDERLY_CONSOLE_PASSWORD": "op-secret",
		}, "--http", "127.0.0.1:0", "--partitions", "2")
		base := "http://" + httpAddrOf(t, w.out)
		waitHTTP(t, base+"/readyz", 200, 30*time.Second)
		consoleActs(t, base, srv.ClientURL())
		if strings.Contains(w.out.String(), "op-secret") {
			t.Error("the log holds the console's password")
		}
	})
	t.Run("NATS server: no console credentials", func(t *testing.T) {
		t.Parallel()
		srv := rolesServer(t)
		w := runInProcess(t, map[string]string{"ORDERLY_NATS_URL": srv.ClientURL(), "ORDERLY_USER": "w", "ORDERLY_PASSWORD": "w-secret"},
			"--http", "127.0.0.1:0", "--partitions", "2")
		base := "http://" + httpAddrOf(t, w.out)
		waitHTTP(t, base+"/readyz", 200, 30*time.Second)
		consoleRefused(t, base, srv.ClientURL())
	})
	t.Run("half credentials are usage errors", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{
			{"--console-user", "op"},
			{"--console-password", "x"},
			{"--console-user", "op", "--console-password", "x", "--console-creds", "/dev/null"},
		} {
			var out natstest.Output
			err := run(context.Background(), append(args, "--http", "127.0.0.1:0"), noenv, &out, &out)
			var u *cli.UsageError
			if !errors.As(err, &u) {
				t.Errorf("%v: %v, want a usage error", args, err)
			}
		}
	})
}

// rolesServer is a NATS server with the roles' users for the order
// workflow, as the Kubernetes manifests configure it: "w" the worker's,
// "op" an operator's.
func rolesServer(t *testing.T) *embedded.Server {
	t.Helper()
	return rolesServerAt(t, "127.0.0.1:-1", t.TempDir(), "op-secret")
}

// rolesServerAt is rolesServer listening on addr with its store in dir,
// the operator's password opPassword.
func rolesServerAt(t *testing.T, addr, dir, opPassword string) *embedded.Server {
	t.Helper()
	var users []embedded.User
	for _, u := range []struct {
		name, password string
		role           roles.Role
	}{{"w", "w-secret", roles.Worker}, {"op", opPassword, roles.Operator}} {
		p, err := roles.For(u.role, "order")
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, embedded.User{Name: u.name, Password: u.password, Publish: p.Publish, Subscribe: p.Subscribe})
	}
	srv, err := embedded.Start(embedded.Config{Listen: addr, DataDir: dir, Users: users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// consoleActs: through the console at base, under the roles, an event is
// sent and the key's live timeline gets its statuses, a dead letter is
// listed and replayed, and the overview reads every figure.
func consoleActs(t *testing.T, base, natsURL string) {
	t.Helper()
	timeline := openSSE(t, base+"/live/w/order/keys/cw-1")
	natstest.RecvUntil(t, timeline, 30*time.Second, "the key's stored statuses", func(e sseEvent) bool { return e.event == "history" })

	code, loc, body := consolePost(t, base, "/w/order/keys/cw-1", "/w/order/keys/cw-1/events", url.Values{"event": {"start_processing"}})
	if code != http.StatusSeeOther || !strings.Contains(loc, "Sent+start_processing") {
		t.Fatalf("send an event: %d %q\n%s", code, loc, body)
	}
	natstest.RecvUntil(t, timeline, 30*time.Second, "a status of cw-1 on its live timeline", func(e sseEvent) bool {
		if e.event == "problem" {
			t.Errorf("live timeline: problem %s", e.data)
		}
		return e.event == "status" && strings.Contains(e.data, `"to":"processing"`)
	})

	seq := deadLetter(t, natsURL, "cw-dl")
	if code, page := consoleGet(t, base+"/w/order/dead-letters"); code != http.StatusOK || !strings.Contains(page, "cw-dl") || strings.Contains(page, "may not") {
		t.Fatalf("dead letters page: %d\n%s", code, page)
	}
	code, loc, body = consolePost(t, base, "/w/order/dead-letters", fmt.Sprintf("/w/order/dead-letters/%d/replay", seq), nil)
	if code != http.StatusSeeOther || !strings.Contains(loc, "Replayed+dead+letter") {
		t.Fatalf("replay a dead letter: %d %q\n%s", code, loc, body)
	}

	// The overview's figures: the streams' through the worker's own
	// connection (an operator may not read the events stream's info), the
	// rest through the console's.
	overview := openSSE(t, base+"/live/overview")
	e := natstest.RecvUntil(t, overview, 30*time.Second, "a reading of the overview", func(e sseEvent) bool { return e.event == "overview" })
	var o struct {
		Workflows []struct {
			Name     string   `json:"name"`
			Lag      *uint64  `json:"lag"`
			Problems []string `json:"problems"`
		} `json:"workflows"`
	}
	if err := json.Unmarshal([]byte(e.data), &o); err != nil || len(o.Workflows) != 1 || o.Workflows[0].Lag == nil || len(o.Workflows[0].Problems) > 0 {
		t.Errorf("overview reading: %v %s", err, e.data)
	}
}

// deadLetter has an operator publish an event that is not JSON to key,
// waits until the worker has dead-lettered it, and returns its sequence.
func deadLetter(t *testing.T, natsURL, key string) uint64 {
	t.Helper()
	op, err := client.Connect(natsURL, client.Config{}, nats.UserInfo("op", "op-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	js, err := jetstream.New(op.Conn())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, "orderly.events.order."+key, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	for {
		dls, err := op.DeadLetters(ctx, "order", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, dl := range dls {
			if dl.Key == key {
				return dl.Sequence
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s was not dead-lettered within 30s", key)
		case <-time.After(50 * time.Millisecond): // the stream, polled: no event to wait on
		}
	}
}

// consoleRefused: through the console at base, acting as the worker's own
// user, every action the worker's role does not allow is refused with a
// page that says so plainly.
func consoleRefused(t *testing.T, base, natsURL string) {
	t.Helper()
	timeline := openSSE(t, base+"/live/w/order/keys/cr-1")
	e := natstest.RecvUntil(t, timeline, 30*time.Second, "a problem on the live timeline", func(e sseEvent) bool { return e.event == "problem" })
	if !strings.Contains(e.data, "The console's NATS user may not follow the statuses of keys") || !strings.Contains(e.data, "--console-user") {
		t.Errorf("live timeline's problem: %s", e.data)
	}
	code, _, body := consolePost(t, base, "/w/order/keys/cr-1", "/w/order/keys/cr-1/events", url.Values{"event": {"start_processing"}})
	if code != http.StatusForbidden || !strings.Contains(body, "The console&#39;s NATS user may not send events") || !strings.Contains(body, "operator role") {
		t.Errorf("send an event: %d, want 403 saying why\n%s", code, body)
	}
	seq := deadLetter(t, natsURL, "cr-dl")
	if code, page := consoleGet(t, base+"/w/order/dead-letters"); code != http.StatusOK || !strings.Contains(page, "may not read or replay dead letters") {
		t.Errorf("dead letters page: %d, want it to say why it lists none\n%s", code, page)
	}
	// The page offers no replay button where it lists nothing: the form of
	// the key page has the same form key.
	code, _, body = consolePost(t, base, "/w/order/keys/cr-1", fmt.Sprintf("/w/order/dead-letters/%d/replay", seq), nil)
	if code != http.StatusForbidden || !strings.Contains(body, "may not read or replay dead letters") {
		t.Errorf("replay a dead letter: %d, want 403 saying why\n%s", code, body)
	}
}

type sseEvent struct{ event, data string }

// openSSE opens a live view of the console; its events come on the
// channel until the test ends.
func openSSE(t *testing.T, url string) <-chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		t.Fatalf("%s: %d", url, resp.StatusCode)
	}
	events := make(chan sseEvent, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReader(resp.Body)
		var e sseEvent
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "" && e.event != "":
				select {
				case events <- e:
				case <-ctx.Done():
					return
				}
				e = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				e.event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				e.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
	})
	return events
}

var consoleHTTP = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func consoleGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := consoleHTTP.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// consolePost submits a write form of the page at from (its form key) to
// the path action, from loopback, and returns the status, the Location and
// the body.
func consolePost(t *testing.T, base, from, action string, form url.Values) (int, string, string) {
	t.Helper()
	_, page := consoleGet(t, base+from)
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no write form on %s:\n%s", from, page)
	}
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf", m[1])
	resp, err := consoleHTTP.PostForm(base+action, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}
