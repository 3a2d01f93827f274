package console_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/orderly-dev/orderly/console"
	"github.com/orderly-dev/orderly/contract"
)

// The console in a real browser: headless Chromium (Debian's chromium,
// which .ci/run installs) driven over the DevTools protocol by chromedp.
// One browser serves every subtest, each in a tab of its own. Every wait is
// for something in the page (a DOM condition polled by the browser) and is
// bounded by the tab's context.

var updateScreenshots = flag.Bool("update", false, "write the console's screenshots into docs/")

// chromiumPath finds the browser; without one the browser tests skip, except
// on CI, where that is a failure.
func chromiumPath(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on CI: .ci/run installs Debian's chromium package")
	}
	t.Skip("no chromium found (apt-get install chromium): the browser tests need one")
	return ""
}

// tab is one browser tab with the console messages it collected.
type tab struct {
	ctx  context.Context
	mu   sync.Mutex
	msgs []string // errors, warnings and exceptions
}

func (tb *tab) problems() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]string(nil), tb.msgs...)
}

// newTab opens a tab in the shared browser, bounded at d.
func newTab(t *testing.T, browser context.Context, d time.Duration) *tab {
	t.Helper()
	tb := &tab{}
	note := func(s string) {
		tb.mu.Lock()
		tb.msgs = append(tb.msgs, s)
		tb.mu.Unlock()
	}
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithListener(func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				note(fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
			}
		case *runtime.EventExceptionThrown:
			note("exception: " + (&chromedp.ExceptionError{ExceptionDetails: ev.ExceptionDetails}).Error())
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
				note(fmt.Sprintf("log %s (%s): %s %s", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
			}
		}
	}))
	t.Cleanup(cancel)
	// The tab starts before the bound, so that the bound ends only the
	// tab's actions.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	ctx, cancelT := context.WithTimeout(ctx, d)
	t.Cleanup(cancelT)
	tb.ctx = ctx
	return tb
}

func (tb *tab) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(tb.ctx, steps...); err != nil {
		t.Fatalf("%s: %v\nconsole: %q", what, err, tb.problems())
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, tb *tab, expr string) T {
	t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// until waits, in the browser, for a JavaScript condition to hold, across
// a navigation that replaces the page it polls in; the tab's context bounds
// it.
func (tb *tab) until(t *testing.T, what, cond string) {
	t.Helper()
	for {
		_, err := chromedp.Run(tb.ctx, chromedp.Poll[bool](cond,
			chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(5*time.Second)))
		if err == nil {
			return
		}
		if tb.ctx.Err() != nil {
			t.Fatalf("waiting for %s (%s): %v\nconsole: %q", what, cond, err, tb.problems())
		}
		// A timeout of this round, or the page it polled in replaced by
		// the next one: poll again.
	}
}

func (tb *tab) screenshot(t *testing.T, name string) {
	t.Helper()
	if !*updateScreenshots {
		return
	}
	png, err := chromedp.Run(tb.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("..", "docs", name), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote docs/%s", name)
}

// text of the first element that matches a CSS selector.
func text(sel string) string {
	b, _ := json.Marshal(sel)
	return fmt.Sprintf("(document.querySelector(%s)||{}).textContent", b)
}

// TestConsoleInBrowser: item 5. The overview loads with no console error
// and its counts change as events are sent; a key's timeline grows live; a
// dead letter is replayed from its page; a write without the token is
// refused and with it accepted; what producers send shows as text.
func TestConsoleInBrowser(t *testing.T) {
	path := chromiumPath(t)
	b := setup(t)
	const token = "browser-token"
	open, _ := b.serve(t, console.Config{})                // loopback: writes allowed
	guarded, _ := b.serve(t, console.Config{Token: token}) // writes need the token

	dir := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox cannot start
		chromedp.DisableGPU,
		chromedp.UserDataDir(dir),
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer func() {
		cancelBrowser()
		_ = chromedp.Cancel(browser) // waits for the browser to exit
	}()
	start := make(chan error, 1)
	go func() { start <- chromedp.Do(browser) }()
	select {
	case err := <-start:
		if err != nil {
			t.Fatalf("start chromium: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("chromium did not start within 60s")
	}

	t.Run("overview_loads_without_console_errors_and_counts_change", func(t *testing.T) {
		tb := newTab(t, browser, 60*time.Second)
		tb.do(t, "open the overview", chromedp.Navigate(open+"/"))
		tb.until(t, "the live view", `document.querySelector("[data-live-state].on") !== null`)
		sec := `section.flow[data-wf="notes"] `
		// The live view's first reading has rates: the page took it.
		tb.until(t, "a first reading", `!isNaN(parseFloat(`+text(sec+`[data-fig="stored"]`)+`))`)
		before, err := strconv.Atoi(eval[string](t, tb, text(sec+`[data-fig="stored"]`)))
		if err != nil {
			t.Fatal(err)
		}
		if open := eval[string](t, tb, text(sec+`tr[data-state="open"] [data-count]`)); open != "0" {
			t.Fatalf("keys in open before any event: %q, want 0", open)
		}
		for i := range 5 {
			b.settle(t, "notes", fmt.Sprintf("ov-%d", i), "note", `{"note":"n"}`)
		}
		tb.until(t, "the stored count to grow by 5", fmt.Sprintf(`parseInt(%s) >= %d`, text(sec+`[data-fig="stored"]`), before+5))
		// The keys by state: five new keys in open.
		tb.until(t, "five keys in open", `parseInt(`+text(sec+`tr[data-state="open"] [data-count]`)+`) >= 5 && parseInt(`+text(sec+`[data-fig="keys"]`)+`) >= 5`)
		tb.until(t, "a rate", `/^[0-9]+\.[0-9]$/.test(`+text(sec+`[data-fig="in_per_s"]`)+`)`)
		if n := eval[int](t, tb, `document.querySelectorAll('section.flow[data-wf="order"] svg.diagram g.state').length`); n != 5 {
			t.Errorf("the order diagram has %d states, want 5", n)
		}
		if p := tb.problems(); len(p) > 0 {
			t.Fatalf("console messages on the overview: %q", p)
		}
		if *updateScreenshots {
			for i := range 3 {
				b.settle(t, "order", fmt.Sprintf("order-%d", i+1), "start_processing", "")
			}
			b.settle(t, "order", "order-2", "request_payment", "")
			tb.do(t, "open the order overview", chromedp.Navigate(open+"/w/order/"))
			tb.until(t, "a rate", `/^[0-9]+\.[0-9]$/.test(`+text(`section.flow[data-wf="order"] [data-fig="in_per_s"]`)+`)`)
			tb.screenshot(t, "console-overview.png")
		}
	})

	t.Run("key_timeline_grows_live", func(t *testing.T) {
		b.settle(t, "order", "order-7", "start_processing", "")
		tb := newTab(t, browser, 60*time.Second)
		tb.do(t, "open the key", chromedp.Navigate(open+"/w/order/keys/order-7"))
		tb.until(t, "the live view", `document.querySelector("[data-live-state].on") !== null`)
		rows := eval[int](t, tb, `document.querySelectorAll("#timeline tr").length`)
		if rows < 2 {
			t.Fatalf("the timeline shows %d statuses from the history, want start_processing's two", rows)
		}
		// Sent from elsewhere: the page shows it without a reload.
		b.settle(t, "order", "order-7", "request_payment", "")
		tb.until(t, "new rows in the timeline", fmt.Sprintf(`document.querySelectorAll("#timeline tr").length >= %d`, rows+2))
		tb.until(t, "the state to follow", text("#key-state")+` === "awaiting_payment"`)
		tb.until(t, "its timers to follow", `/payment_timeout after 15m0s/.test(`+text("#key-timer-list")+`) && !document.getElementById("key-timers").hidden`)
		tb.screenshot(t, "console-key.png")
		// Sent from the page's own form.
		tb.do(t, "send confirm_payment",
			chromedp.SetValue(`#send-form input[name="event"]`, "confirm_payment"),
			chromedp.Click(`#send-form button`),
		)
		tb.until(t, "the note that it was sent", `/Sent confirm_payment as job/.test(`+text(".note")+`)`)
		tb.until(t, "completed", text("#key-state")+` === "completed"`)
		if p := tb.problems(); len(p) > 0 {
			t.Fatalf("console messages on the key page: %q", p)
		}
	})

	t.Run("dead_letter_replayed_from_its_page", func(t *testing.T) {
		dl := b.deadLetter(t, "notes", "orderly.events.notes.dl-1", []byte(`{"event":"note","data":{"note":"late"}`)) // malformed: no closing brace
		tb := newTab(t, browser, 60*time.Second)
		tb.do(t, "open the dead letters", chromedp.Navigate(open+"/w/notes/dead-letters"))
		row := fmt.Sprintf(`tr[data-seq="%d"]`, dl.Sequence)
		tb.until(t, "its row", fmt.Sprintf(`document.querySelector(%q) !== null`, row))
		if reason := eval[string](t, tb, text(row+" .reason")); !strings.Contains(reason, "malformed") {
			t.Errorf("reason shown %q, want the malformed one", reason)
		}
		tb.do(t, "replay it", chromedp.Click(row+" button"))
		tb.until(t, "the note that it was replayed", fmt.Sprintf(`/Replayed dead letter %d as job/.test(%s)`, dl.Sequence, text(".note")))
		tb.until(t, "its row gone", fmt.Sprintf(`document.querySelector(%q) === null`, row))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		all, err := b.producer.DeadLetters(ctx, "notes", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range all {
			if d.Sequence == dl.Sequence {
				t.Fatalf("dead letter %d still stored after its replay", dl.Sequence)
			}
		}
	})

	t.Run("write_without_token_refused_with_it_accepted", func(t *testing.T) {
		tb := newTab(t, browser, 60*time.Second)
		tb.do(t, "open the key", chromedp.Navigate(guarded+"/w/notes/keys/tok-1"))
		tb.until(t, "the form", `document.querySelector("#send-form input.token") !== null`)
		tb.do(t, "send without the token",
			chromedp.SetValue(`#send-form input[name="event"]`, "note"),
			chromedp.SetValue(`#send-form textarea[name="data"]`, `{"note":"no token"}`),
			chromedp.Click(`#send-form button`),
		)
		tb.until(t, "the refusal", `/console token missing/.test(document.querySelector("h1").textContent)`)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := b.producer.State(ctx, "notes", "tok-1"); err == nil {
			t.Fatal("the refused event was applied")
		}
		tb.do(t, "back to the key", chromedp.Navigate(guarded+"/w/notes/keys/tok-1"))
		tb.do(t, "send with the token",
			chromedp.SetValue(`#send-form input[name="event"]`, "note"),
			chromedp.SetValue(`#send-form textarea[name="data"]`, `{"note":"with token"}`),
			chromedp.SetValue(`#send-form input.token`, token),
			chromedp.Click(`#send-form button`),
		)
		tb.until(t, "the note that it was sent", `/Sent note as job/.test(`+text(".note")+`)`)
		waitState(t, b.producer, "notes", "tok-1", func(r contract.StateRecord) bool { return strings.Contains(string(r.Data), "with token") })
		// The tab remembers the token for its next form.
		tb.do(t, "reload", chromedp.Navigate(guarded+"/w/notes/keys/tok-1"))
		tb.until(t, "the token filled in", `document.querySelector("#send-form input.token").value === `+strconv.Quote(token))
	})

	t.Run("hostile_keys_and_data_shown_as_text", func(t *testing.T) {
		data, _ := json.Marshal(map[string]string{"note": hostile})
		b.settle(t, "notes", "evil", "note", string(data))
		b.deadLetter(t, "notes", `orderly.events.notes.<img/src=x/onerror=alert(4)>`, []byte(`{"event":"note"}`))
		tb := newTab(t, browser, 60*time.Second)
		tb.do(t, "open the key", chromedp.Navigate(open+"/w/notes/keys/evil"))
		tb.until(t, "the live view", `document.querySelector("[data-live-state].on") !== null`)
		// A refused note whose reason repeats the markup arrives live, and
		// goes into the timeline by the page's script.
		refused, _ := json.Marshal(map[string]string{"note": "refuse" + hostile})
		b.settle(t, "notes", "evil", "note", string(refused))
		tb.until(t, "the refusal in the timeline", `/refused: refuse<script>/.test(document.querySelector("#timeline").textContent)`)
		if got := eval[string](t, tb, text("#key-data")); !strings.Contains(got, "<script>window.__pwned=1</script><img src=x") {
			t.Errorf("the data shows %q, want the markup as text", got)
		}
		tb.do(t, "open the dead letters", chromedp.Navigate(open+"/w/notes/dead-letters"))
		tb.until(t, "the hostile key as text", `[...document.querySelectorAll(".key-cell")].some(e => e.textContent.includes("<img/src=x"))`)
		for _, page := range []string{"/w/notes/keys/evil", "/w/notes/dead-letters"} {
			tb.do(t, "open "+page, chromedp.Navigate(open+page))
			tb.until(t, "the page", `document.readyState === "complete"`)
			if n := eval[int](t, tb, `document.querySelectorAll("main script, main img, main [onerror], main [onmouseover]").length`); n != 0 {
				t.Errorf("%s: %d elements made from producers' markup", page, n)
			}
			if eval[bool](t, tb, `window.__pwned !== undefined`) {
				t.Errorf("%s: the producers' script ran", page)
			}
		}
		if p := tb.problems(); len(p) > 0 {
			t.Fatalf("console messages: %q", p)
		}
	})
}
