package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/internal/natstest"
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
