package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/console"
	"github.com/orderly-dev/orderly/contract"
)

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrfOf reads the form key from a page of the console.
func csrfOf(t *testing.T, pageURL string) string {
	t.Helper()
	_, body := get(t, pageURL)
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf field on %s:\n%s", pageURL, body)
	}
	return m[1]
}

// waitState polls the key's state until ok accepts it (there is no event
// that says "stored": the state is read back).
func waitState(t *testing.T, cl *client.Client, workflow, key string, ok func(contract.StateRecord) bool) contract.StateRecord {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last contract.StateRecord
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last, lastErr = cl.State(ctx, workflow, key)
		cancel()
		if lastErr == nil && ok(last) {
			return last
		}
		time.Sleep(20 * time.Millisecond) // polling the bucket: no event to wait on
	}
	t.Fatalf("state of %s/%s not as wanted within 30s: %+v, %v", workflow, key, last, lastErr)
	return last
}

// TestWebConsoleWriteNeedsTokenOrLoopback: item 4's rule for write
// actions. With --console-token every write needs it (even on loopback);
// without one, only requests to a loopback address (naming a loopback
// host) may write; every write needs the page's form key and a same-origin
// request.
func TestWebConsoleWriteNeedsTokenOrLoopback(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const token = "s3cret-token"
	withToken, _ := b.serve(t, console.Config{Token: token})
	loopback, plain := b.serve(t, console.Config{})

	send := func(base, note string) string { return base + "/w/notes/keys/k1/events" }
	form := func(csrf, tok, note string) url.Values {
		v := url.Values{"event": {"note"}, "data": {`{"note":"` + note + `"}`}}
		if csrf != "" {
			v.Set("csrf", csrf)
		}
		if tok != "" {
			v.Set("token", tok)
		}
		return v
	}
	csrf := csrfOf(t, withToken+"/w/notes/keys/k1")

	t.Run("token_missing", func(t *testing.T) {
		code, _, body := post(t, send(withToken, ""), form(csrf, "", "a"), nil)
		if code != http.StatusForbidden || !strings.Contains(body, "console token missing") {
			t.Fatalf("got %d, want 403 saying the token is missing:\n%s", code, body)
		}
	})
	t.Run("token_wrong", func(t *testing.T) {
		code, _, body := post(t, send(withToken, ""), form(csrf, "guess", "a"), nil)
		if code != http.StatusForbidden || !strings.Contains(body, "wrong console token") {
			t.Fatalf("got %d, want 403 saying the token is wrong:\n%s", code, body)
		}
	})
	t.Run("no_form_key", func(t *testing.T) {
		code, _, body := post(t, send(withToken, ""), form("", token, "a"), nil)
		if code != http.StatusForbidden || !strings.Contains(body, "form key") {
			t.Fatalf("got %d, want 403 about the form key:\n%s", code, body)
		}
	})
	t.Run("cross_site", func(t *testing.T) {
		code, _, body := post(t, send(withToken, ""), form(csrf, token, "a"), http.Header{"Origin": {"http://evil.example"}})
		if code != http.StatusForbidden || !strings.Contains(body, "cross-site") {
			t.Fatalf("got %d, want 403 cross-site:\n%s", code, body)
		}
		code, _, _ = post(t, send(withToken, ""), form(csrf, token, "a"), http.Header{"Sec-Fetch-Site": {"cross-site"}})
		if code != http.StatusForbidden {
			t.Fatalf("Sec-Fetch-Site cross-site: got %d, want 403", code)
		}
	})
	t.Run("token_right", func(t *testing.T) {
		code, loc, body := post(t, send(withToken, ""), form(csrf, token, "with-token"), http.Header{"X-Unused": {"1"}})
		if code != http.StatusSeeOther || !strings.HasPrefix(loc, "/w/notes/keys/k1?note=") {
			t.Fatalf("got %d (Location %q), want 303 to the key's page:\n%s", code, loc, body)
		}
		waitState(t, b.producer, "notes", "k1", func(r contract.StateRecord) bool { return strings.Contains(string(r.Data), "with-token") })
	})
	t.Run("token_in_header", func(t *testing.T) {
		code, _, body := post(t, send(withToken, ""), form(csrf, "", "by-header"), http.Header{"X-Orderly-Console-Token": {token}})
		if code != http.StatusSeeOther {
			t.Fatalf("got %d, want 303:\n%s", code, body)
		}
	})
	t.Run("loopback_without_token", func(t *testing.T) {
		csrf := csrfOf(t, loopback+"/w/notes/keys/k1")
		code, _, body := post(t, send(loopback, ""), form(csrf, "", "on-loopback"), nil)
		if code != http.StatusSeeOther {
			t.Fatalf("got %d, want 303:\n%s", code, body)
		}
		waitState(t, b.producer, "notes", "k1", func(r contract.StateRecord) bool { return strings.Contains(string(r.Data), "on-loopback") })
	})
	t.Run("loopback_named_otherwise", func(t *testing.T) {
		// A page of another site whose name resolves to 127.0.0.1 (DNS
		// rebinding) sends its own Host: refused.
		csrf := csrfOf(t, loopback+"/w/notes/keys/k1")
		req, _ := http.NewRequest(http.MethodPost, send(loopback, ""), strings.NewReader(form(csrf, "", "rebound").Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Host = "evil.example"
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("got %d, want 403", resp.StatusCode)
		}
	})
	t.Run("not_loopback_without_token", func(t *testing.T) {
		// A request that arrived on another address: read-only, and the
		// page offers no write form.
		addr := &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 8080}
		page := httptest.NewRequest(http.MethodGet, "http://10.1.2.3:8080/w/notes/keys/k1", nil)
		page = page.WithContext(context.WithValue(page.Context(), http.LocalAddrContextKey, net.Addr(addr)))
		rec := httptest.NewRecorder()
		plain.ServeHTTP(rec, page)
		if body := rec.Body.String(); !strings.Contains(body, "read-only") || strings.Contains(body, `id="send-form"`) {
			t.Fatalf("the page should say read-only and offer no form:\n%s", body)
		}
		csrf := csrfField.FindStringSubmatch(rec.Body.String())
		key := ""
		if csrf != nil {
			key = csrf[1]
		}
		req := httptest.NewRequest(http.MethodPost, "http://10.1.2.3:8080/w/notes/keys/k1/events", strings.NewReader(form(key, "", "remote").Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, net.Addr(addr)))
		rec = httptest.NewRecorder()
		plain.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "--console-token") {
			t.Fatalf("got %d, want 403 naming --console-token:\n%s", rec.Code, rec.Body.String())
		}
	})
}

// hostile is what a producer may put in event data: markup that would run
// if the console put it in a page unescaped.
const hostile = `<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">`

// TestWebConsoleEscapesWhatProducersSend: keys, data, event names and
// reasons come from anyone who may publish; every page shows them as text.
func TestWebConsoleEscapesWhatProducersSend(t *testing.T) {
	t.Parallel()
	b := setup(t)
	base, _ := b.serve(t, console.Config{})
	data, _ := json.Marshal(map[string]string{"note": hostile})
	b.settle(t, "notes", "esc", "note", string(data))
	// A key that breaks the key rule (the stream takes any subject token)
	// and an event no workflow declares: both end as dead letters.
	badKey := `<b>k"onmouseover="alert(3)`
	b.deadLetter(t, "notes", "orderly.events.notes."+badKey, []byte(`{"event":"note"}`))
	b.deadLetter(t, "notes", "orderly.events.notes.esc", []byte(`{"event":"<img src=x onerror=alert(1)>","data":`+string(data)+`}`))

	check := func(path string, wantText ...string) {
		t.Helper()
		code, body := get(t, base+path)
		if code != http.StatusOK {
			t.Fatalf("%s: %d\n%s", path, code, body)
		}
		for _, raw := range []string{"<script>window", "<img src=x", `"onmouseover=`, "<b>k"} {
			if strings.Contains(body, raw) {
				t.Errorf("%s shows %q unescaped", path, raw)
			}
		}
		for _, w := range wantText {
			if !strings.Contains(body, w) {
				t.Errorf("%s does not show %q", path, w)
			}
		}
	}
	check("/w/notes/keys/esc", "&lt;script&gt;window.__pwned=1&lt;/script&gt;")
	check("/w/notes/dead-letters", "&lt;b&gt;k&#34;onmouseover=&#34;alert(3)", "&lt;img src=x onerror=alert(1)&gt;")
}

// readEvent reads one server-sent event.
func readEvent(t *testing.T, r *bufio.Reader) (string, string) {
	t.Helper()
	var event, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("live view ended: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && event != "":
			return event, data
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
}

// openLive opens a live view, for at most a minute (a read that waits
// longer fails); the body is closed at the test's end.
func openLive(t *testing.T, url string) (*http.Response, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, bufio.NewReader(resp.Body)
}

// TestWebConsoleLiveViews: the overview's live view sends fresh figures
// and the key's sends its statuses as they happen; views are bounded in
// number, end when the browser goes, and all end on Close.
func TestWebConsoleLiveViews(t *testing.T) {
	t.Parallel()
	b := setup(t)
	base, c := b.serve(t, console.Config{MaxStreams: 3})

	resp, r := openLive(t, base+"/live/overview")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("overview live view: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	stored := func() uint64 {
		for {
			ev, data := readEvent(t, r)
			if ev != "overview" {
				continue
			}
			var o struct {
				Workflows []struct {
					Name   string  `json:"name"`
					Stored *uint64 `json:"stored"`
				} `json:"workflows"`
			}
			if err := json.Unmarshal([]byte(data), &o); err != nil {
				t.Fatal(err)
			}
			for _, f := range o.Workflows {
				if f.Name == "notes" && f.Stored != nil {
					return *f.Stored
				}
			}
			t.Fatalf("no figures for notes in %s", data)
		}
	}
	before := stored()
	for i := range 3 {
		b.settle(t, "notes", fmt.Sprintf("live-%d", i), "note", `{"note":"x"}`)
	}
	for n := stored(); n < before+3; n = stored() {
	}

	kresp, kr := openLive(t, base+"/live/w/notes/keys/live-0")
	if kresp.StatusCode != http.StatusOK {
		t.Fatalf("key live view: %d", kresp.StatusCode)
	}
	var history []contract.Status
	for ev, data := readEvent(t, kr); ; ev, data = readEvent(t, kr) {
		if ev == "history" {
			if err := json.Unmarshal([]byte(data), &history); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if len(history) != 1 || history[0].Event != "note" {
		t.Fatalf("history of live-0: %+v, want its one note", history)
	}
	b.settle(t, "notes", "live-0", "note", `{"note":"live one"}`)
	for {
		ev, data := readEvent(t, kr)
		if ev != "status" {
			continue
		}
		var st contract.Status
		if err := json.Unmarshal([]byte(data), &st); err != nil {
			t.Fatal(err)
		}
		if st.Key != "live-0" || st.Event != "note" {
			t.Fatalf("status %+v, want live-0's note", st)
		}
		break
	}

	// The bound: two views are open, one more fits, the next is refused.
	third, _ := openLive(t, base+"/live/overview")
	if third.StatusCode != http.StatusOK {
		t.Fatalf("third view: %d", third.StatusCode)
	}
	code, body := get(t, base+"/live/overview")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "too many live views") {
		t.Fatalf("fourth view: %d %q, want 503 too many", code, body)
	}
	// A browser that goes frees its slot.
	third.Body.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, base+"/live/overview", nil)
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err == nil && resp.StatusCode == http.StatusOK {
			resp.Body.Close()
			cancel()
			break
		}
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatal("the slot of a closed view was not freed within 20s")
		}
		time.Sleep(20 * time.Millisecond) // the handler notices the gone browser on its own
	}

	// Close ends every view: the open ones reach their end.
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return within 20s")
	}
	for _, rd := range []*bufio.Reader{r, kr} {
		ended := make(chan error, 1)
		go func() {
			_, err := rd.ReadString(0)
			ended <- err
		}()
		select {
		case err := <-ended:
			if err == nil {
				t.Fatal("view did not end")
			}
		case <-time.After(20 * time.Second):
			t.Fatal("an open view did not end within 20s of Close")
		}
	}
	if code, _ := get(t, base+"/live/overview"); code != http.StatusServiceUnavailable {
		t.Fatalf("a view after Close: %d, want 503", code)
	}
}

// TestWebConsolePages: every page answers with what it is about.
func TestWebConsolePages(t *testing.T) {
	t.Parallel()
	b := setup(t)
	base, _ := b.serve(t, console.Config{})
	b.settle(t, "order", "o-1", "start_processing", "")
	b.settle(t, "order", "o-1", "request_payment", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.producer.AddSchedule(ctx, "notes", client.Schedule{Name: "daily", Key: "k9", Event: "note", Every: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.producer.Publish(ctx, "notes", "k9", contract.Envelope{Event: "note"}, client.WithDelay(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/", []string{b.worker.ID(), "this one", "0 1 2 3", `data-state="awaiting_payment"`, "<svg", "state diagram of order", "slow calls awaiting a retry"}},
		{"/w/order/", []string{"order", "<svg", `<td class="num" data-count>1</td>`}},
		{"/w/order/keys/?state=awaiting_payment", []string{`href="/w/order/keys/o-1"`, "in awaiting_payment since"}},
		{"/w/order/keys/?state=completed", []string{"No key in completed"}},
		{"/w/order/stuck?older=0s", []string{`href="/w/order/keys/o-1"`, "state unchanged"}},
		{"/w/order/keys/o-1", []string{"awaiting_payment", "amount_cents", "Send an event", "confirm_payment", "payment_timeout after 15m0s in the state", "payment_reminder every 5m0s"}},
		{"/w/notes/schedules", []string{"daily", "@every 1h0m0s"}},
		{"/w/notes/schedules?key=k9", []string{"Delayed events of a key", "note"}},
		{"/w/notes/keys/k9", []string{"Delayed events", "Cancel"}},
		{"/w/order/dead-letters", []string{"No dead letters"}},
	} {
		code, body := get(t, base+tc.path)
		if code != http.StatusOK {
			t.Errorf("%s: %d\n%s", tc.path, code, body)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s does not show %q", tc.path, w)
			}
		}
	}
	for path, want := range map[string]int{"/w/nope/": 404, "/w/order/keys/bad%20key": 400, "/nothing": 404} {
		if code, _ := get(t, base+path); code != want {
			t.Errorf("%s: %d, want %d", path, code, want)
		}
	}
	// Replay all: every dead letter goes back to its key.
	b.deadLetter(t, "notes", "orderly.events.notes.ra-1", []byte(`{"event":"note","data":{"note":"a"}}x`))
	b.deadLetter(t, "notes", "orderly.events.notes.ra-2", []byte(`{"event":"note","data":{"note":"b"}}x`))
	csrf := csrfOf(t, base+"/w/notes/dead-letters")
	code, loc, body := post(t, base+"/w/notes/dead-letters/replay-all", url.Values{"csrf": {csrf}}, nil)
	if code != http.StatusSeeOther || !strings.Contains(loc, "Replayed+all+2+dead+letters") {
		t.Fatalf("replay all: %d %q\n%s", code, loc, body)
	}
	// A note in a link made elsewhere is not shown: only the console's
	// own, signed, are.
	if _, body := get(t, base+"/?note=Enter+your+token+at+evil.example"); strings.Contains(body, "evil.example") {
		t.Error("an unsigned note was shown")
	}
	// Every page forbids inline script: escaped or not, nothing a producer
	// sends can run.
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("Content-Security-Policy %q", csp)
	}
}

func TestWebConsoleConfig(t *testing.T) {
	t.Parallel()
	_, err := console.New(console.Config{})
	if err == nil || !strings.Contains(err.Error(), "Client is required") || !strings.Contains(err.Error(), "Workflows") {
		t.Fatalf("New with nothing: %v", err)
	}
	var e error = err
	if errors.Unwrap(e) == nil {
		t.Fatalf("want a wrapped error, got %v", err)
	}
}
