package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/natstest"
)

// TestForgeryEmbeddedServerEnforcesRoles: given credentials, the worker's
// embedded server gives each user its role and nothing more, and says which
// role has no user.
func TestForgeryEmbeddedServerEnforcesRoles(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stderr natstest.Output
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(), "--http", "127.0.0.1:0", "--partitions", "2",
			"--user", "w", "--password", "w-secret", "--producer-user", "p", "--producer-password", "p-secret"}, noenv, &stderr, &stderr)
	}()
	defer func() {
		cancel()
		if err := natstest.Recv(t, done, natstest.Timeout, "run to return after its cancellation"); err != nil {
			t.Errorf("run: %v\n%s", err, stderr.String())
		}
	}()
	natsAddr := natsAddrOf(t, &stderr)
	waitHTTP(t, "http://"+httpAddrOf(t, &stderr)+"/readyz", 200, 30*time.Second)
	if log := stderr.String(); !strings.Contains(log, `"role":"operator"`) || strings.Contains(log, `"role":"producer"`) {
		t.Errorf("want a warning about the operator role only:\n%s", log)
	}

	url := "nats://" + natsAddr
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	prod, err := client.Connect(url, client.Config{}, nats.UserInfo("p", "p-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	if _, st, err := prod.PublishAndWait(ctx2, "order", "o1", contract.Envelope{Event: "start_processing"}); err != nil || st.To != "processing" {
		t.Fatalf("a producer's event: %+v %v", st, err)
	}

	// A producer may not publish a status; the worker's own user may not
	// publish an event; nobody else gets in.
	for _, c := range []struct{ user, password, subject string }{
		{"p", "p-secret", "orderly.status.order.o1"},
		{"w", "w-secret", "orderly.events.order.o1"},
	} {
		errs := make(chan error, 4)
		nc, err := nats.Connect(url, nats.UserInfo(c.user, c.password), nats.CustomInboxPrefix("_INBOX_orderly_worker"),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(c.subject, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errs:
			if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), c.subject) {
				t.Errorf("%s publishing to %s: %v", c.user, c.subject, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s published to %s without a permissions violation", c.user, c.subject)
		}
		nc.Close()
	}
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Error("a client without credentials connected")
	}
}

func TestRoleFlagsAreUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--producer-user", "p", "--producer-password", "x"},                                                                                       // no worker user
		{"--user", "w", "--password", "x", "--producer-user", "p"},                                                                                 // no password
		{"--user", "w", "--password", "x", "--operator-password", "y"},                                                                             // no user
		{"--user", "w", "--password", "x", "--producer-user", "w", "--producer-password", "y"},                                                     // the worker's name
		{"--user", "w", "--password", "x", "--producer-user", "p", "--producer-password", "y", "--operator-user", "p", "--operator-password", "z"}, // twice
	} {
		var out natstest.Output
		err := run(context.Background(), append(args, "--http", "127.0.0.1:0"), noenv, &out, &out)
		var u *cli.UsageError
		if !errors.As(err, &u) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}
