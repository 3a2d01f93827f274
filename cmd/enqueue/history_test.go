package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

// TestHistoryAndWatchBadInput: history and watch's replay flags refuse what
// cannot work with a clear message, as usage errors (exit 2) where the
// command line is wrong, before connecting; a bad key exits 1 as for
// status and watch; an unknown key has an empty history (exit 0); a
// workflow without a history says so (exit 1).
func TestHistoryAndWatchBadInput(t *testing.T) {
	t.Parallel()
	url, conn := setup(t, queue.Spec{})
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Timeout)
	defer cancel()
	dead := "nats://" + natstest.DeadAddr(t) // usage errors are found before connecting
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"history"}, 2, "history takes one KEY, got 0 arguments"},
		{[]string{"history", "k1", "k2"}, 2, "history takes one KEY, got 2 arguments"},
		{[]string{"watch", "--since", "-1s"}, 2, "--since -1s: want a duration of 0 or more"},
		{[]string{"watch", "k1", "--since", "1m", "--all"}, 2, "--since and --all exclude each other"},
		{[]string{"watch", "--since", "soon"}, 2, `invalid argument "soon" for "--since"`},
		{[]string{"status", "k1", "--since", "1m"}, 2, "--since applies only to watch"},
		{[]string{"history", "k1", "--all"}, 2, "--all applies only to dlq replay and watch"},
		{[]string{"history", "k1", "--id", "x"}, 2, "--id does not apply to history"},
		{[]string{"history", "a:b"}, 1, `invalid key: "a:b" contains ':'`},
		{[]string{"watch", "a:b", "--all"}, 1, `invalid key: "a:b" contains ':'`},
	} {
		_, errOut, code := runCLI(t, ctx, append(c.args, "--nats-url", dead)...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", c.args, code, errOut, c.code, c.want)
		}
	}

	out, errOut, code := runCLI(t, ctx, "history", "nobody", "--nats-url", url)
	if code != 0 || out != "" || !strings.Contains(errOut, "no stored statuses for key nobody") {
		t.Errorf("history of an unknown key: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out, _, code := runCLI(t, ctx, "history", "nobody", "--json", "--nats-url", url); code != 0 || out != "" {
		t.Errorf("history --json of an unknown key: exit %d, stdout %q", code, out)
	}
	// A stored status is printed as watch prints it.
	at := time.Date(2026, 11, 30, 7, 29, 16, 0, time.UTC)
	if err := conn.PublishStatus(&contract.Status{Workflow: "order", Key: "k1", JobID: "j1", Event: "start_processing", From: "idle", To: "processing", Version: 1, At: at}); err != nil {
		t.Fatal(err)
	}
	want := "2026-11-30T07:29:16Z k1 idle -> processing (version 1) event=start_processing job=j1\n"
	deadline := time.Now().Add(natstest.Timeout)
	for out, _, _ = runCLI(t, ctx, "history", "k1", "--nats-url", url); out != want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // until the stream has stored it
		out, _, _ = runCLI(t, ctx, "history", "k1", "--nats-url", url)
	}
	if out != want {
		t.Errorf("history k1: %q, want %q", out, want)
	}

	// A workflow whose workers keep no history.
	offURL, _ := setup(t, queue.Spec{HistoryPerKey: -1})
	for _, args := range [][]string{{"history", "k1"}, {"watch", "--all"}, {"watch", "k1", "--since", "1h"}} {
		_, errOut, code := runCLI(t, ctx, append(args, "--nats-url", offURL)...)
		if code != 1 || !strings.Contains(errOut, "no status history kept for the workflow") {
			t.Errorf("%v without a history: exit %d, stderr %q", args, code, errOut)
		}
	}
}
