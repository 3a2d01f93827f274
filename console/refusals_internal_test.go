package console

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestWebConsoleRefusalsParsed: the server's permissions violations, as
// nats.go reports them, are read as refusals of a subject; other errors are
// not; a refusal belongs to the workflow whose subject or stream it names.
func TestWebConsoleRefusalsParsed(t *testing.T) {
	t.Parallel()
	// nats.go's words around the server's (nats-server's client.go).
	wrap := func(server string) error { return fmt.Errorf("%w: %s", nats.ErrPermissionViolation, server) }
	for _, c := range []struct {
		err  error
		want *RefusedError
	}{
		{wrap(`Permissions Violation for Publish to "orderly.events.order.k1"`), &RefusedError{Subject: "orderly.events.order.k1"}},
		{wrap(`Permissions Violation for Subscription to "orderly.status.order.k1"`), &RefusedError{Subscribe: true, Subject: "orderly.status.order.k1"}},
		{wrap(`Permissions Violation for Subscription to "orderly.status.order.k1" (sid "5")`), &RefusedError{Subscribe: true, Subject: "orderly.status.order.k1"}},
		{errors.New(`Permissions Violation for Publish to "orderly.events.order.k1"`), nil}, // not nats.go's permissions error
		{nats.ErrTimeout, nil},
		{nil, nil},
	} {
		got, ok := refusalOf(c.err)
		if ok != (c.want != nil) || ok && *got != *c.want {
			t.Errorf("%v: %+v %v, want %+v", c.err, got, ok, c.want)
		}
		if ok && !errors.Is(got, nats.ErrPermissionViolation) {
			t.Errorf("%v is not nats.ErrPermissionViolation", got)
		}
	}
	for _, c := range []struct {
		subject string
		want    bool
	}{
		{"orderly.events.order.k1", true},
		{"$JS.API.STREAM.MSG.GET.ORDERLY_DLQ_ORDER", true},
		{"$JS.API.CONSUMER.CREATE.ORDERLY_SCHEDULES_ORDER.x.orderly.schedules.order.at.k.*", true},
		{"$JS.API.DIRECT.GET.KV_orderly_jobs_order.$KV.orderly_jobs_order.j1", true},
		{"$KV.orderly_jobs_order.sched.j1", true},
		{"orderly.events.order_x.k1", false},
		{"$JS.API.STREAM.MSG.GET.ORDERLY_DLQ_ORDER_X", false},
		{"$KV.orderly_jobs_order_x.sched.j1", false},
		{"_INBOX.abc", false},
	} {
		if got := ofWorkflow("order", c.subject); got != c.want {
			t.Errorf("ofWorkflow(order, %s) = %v", c.subject, got)
		}
	}
}
