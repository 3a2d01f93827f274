package client_test

import (
	"context"
	"testing"

	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/internal/natstest"
	"github.com/orderly-dev/orderly/internal/queue"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, natstest.LeakOptions()...) }

// bundle is what a test of the client talks to: a server with workflow
// "order" provisioned (no worker), the client under test, and the
// runtime's connection for doing what a worker would.
type bundle struct {
	url    string
	client *client.Client
	conn   *queue.Conn
}

func setup(t *testing.T, spec queue.Spec) bundle {
	t.Helper()
	srv := natstest.Server(t)
	conn := natstest.Conn(t, srv.ClientURL())
	if spec.Workflow == "" {
		spec.Workflow = "order"
	}
	if _, err := conn.Provision(context.Background(), spec); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return bundle{url: srv.ClientURL(), client: natstest.Client(t, srv.ClientURL()), conn: conn}
}

// pending is how many events the events stream of "order" holds.
func (b bundle) pending(t *testing.T) uint64 {
	t.Helper()
	info, err := b.conn.Info(context.Background(), "order")
	if err != nil {
		t.Fatal(err)
	}
	return info.Pending
}
