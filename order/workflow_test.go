package order_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly-dev/orderly/order"
	"github.com/orderly-dev/orderly/orderlytest"
	"github.com/orderly-dev/orderly/worker"
)

// scriptedGateway is the simulated gateway with failures chosen per order
// and call, and a count of the calls.
type scriptedGateway struct {
	sim  *order.SimGateway
	fail func(method, orderID string, call int) error // nil: no failure

	mu    sync.Mutex
	calls map[string]int // by method and order id
	refs  map[string]string
}

func newScriptedGateway(fail func(method, orderID string, call int) error) *scriptedGateway {
	return &scriptedGateway{sim: order.NewSimGateway(order.SimConfig{}), fail: fail, calls: map[string]int{}, refs: map[string]string{}}
}

func (g *scriptedGateway) call(method, orderID string) error {
	g.mu.Lock()
	g.calls[method+" "+orderID]++
	n := g.calls[method+" "+orderID]
	g.mu.Unlock()
	return g.fail(method, orderID, n)
}

func (g *scriptedGateway) count(method, orderID string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[method+" "+orderID]
}

func (g *scriptedGateway) FetchOrder(ctx context.Context, orderID, key string) (order.Details, error) {
	if err := g.call("fetch", orderID); err != nil {
		return order.Details{}, err
	}
	return g.sim.FetchOrder(ctx, orderID, key)
}

func (g *scriptedGateway) Authorize(ctx context.Context, d order.Details, key string) (string, error) {
	if err := g.call("authorize", d.ID); err != nil {
		return "", err
	}
	ref, err := g.sim.Authorize(ctx, d, key)
	g.mu.Lock()
	g.refs[ref] = d.ID
	g.mu.Unlock()
	return ref, err
}

func (g *scriptedGateway) Capture(ctx context.Context, ref, key string) error {
	g.mu.Lock()
	orderID, ok := g.refs[ref]
	g.mu.Unlock()
	if !ok {
		return order.ErrDeclined // not a reference Authorize gave: a wiring fault
	}
	if err := g.call("capture", orderID); err != nil {
		return err
	}
	return g.sim.Capture(ctx, ref, key)
}

// TestNewWorkflowRetriesAllButDeclines: the order workflow wires each
// action to its gateway call with the data the transitions stored (the
// fetched order to Authorize, its payment reference to Capture); a
// transient gateway error is retried, a decline is not.
func TestNewWorkflowRetriesAllButDeclines(t *testing.T) {
	t.Parallel()
	errTimeout := errors.New("gateway timeout")
	gw := newScriptedGateway(func(method, orderID string, call int) error {
		switch {
		case orderID == "o-flaky" && method == "fetch" && call <= 2:
			return errTimeout
		case orderID == "o-declined" && method == "authorize":
			return order.ErrDeclined
		}
		return nil
	})
	wf, err := order.NewWorkflow(order.Config{PaymentTimeout: time.Hour}, gw)
	if err != nil {
		t.Fatal(err)
	}
	h := orderlytest.Start(t, []worker.Workflow{wf}, orderlytest.WithConfig(func(c *worker.Config) {
		c.RetryBackoff = time.Millisecond
	}))

	// Each event waits for the slow work of the one before it.
	for _, key := range []string{"o-ok", "o-flaky", "o-declined"} {
		h.Send(key, string(order.StartProcessing), nil)
		h.Send(key, string(order.RequestPayment), nil)
	}
	h.Send("o-ok", string(order.ConfirmPayment), nil)

	h.RequireState("o-ok", order.Completed)
	for _, method := range []string{"fetch", "authorize", "capture"} {
		if n := gw.count(method, "o-ok"); n != 1 {
			t.Errorf("o-ok: %d %s calls, want 1", n, method)
		}
	}

	rec := h.RequireState("o-flaky", order.AwaitingPayment)
	if n := gw.count("fetch", "o-flaky"); n != 3 {
		t.Errorf("o-flaky: %d fetch calls, want 3 (two transient failures retried)", n)
	}
	var d order.Data
	if err := json.Unmarshal(rec.Data, &d); err != nil || d.Order == nil || d.Order.ID != "o-flaky" || d.PaymentRef == "" {
		t.Errorf("o-flaky: data %s (%v), want the fetched order and a payment reference", rec.Data, err)
	}

	rec = h.RequireState("o-declined", order.Failed)
	if n := gw.count("authorize", "o-declined"); n != 1 {
		t.Errorf("o-declined: %d authorize calls, want 1: a decline is not retried", n)
	}
	if err := json.Unmarshal(rec.Data, &d); err != nil || !strings.HasPrefix(d.FailureReason, "authorization failed") ||
		!strings.Contains(d.FailureReason, order.ErrDeclined.Error()) {
		t.Errorf("o-declined: data %s (%v), want failure reason \"authorization failed: \" and the decline", rec.Data, err)
	}
}
