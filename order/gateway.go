package order

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"time"
)

// PaymentGateway is the slow work of the order workflow. Every call carries
// an idempotency key because the worker retries: a retried call must not
// authorize or capture twice.
type PaymentGateway interface {
	FetchOrder(ctx context.Context, orderID string, idempotencyKey string) (Details, error)
	Authorize(ctx context.Context, order Details, idempotencyKey string) (paymentRef string, err error)
	Capture(ctx context.Context, paymentRef string, idempotencyKey string) error
}

// ErrDeclined is the simulated gateway's permanent refusal.
var ErrDeclined = errors.New("order: declined by gateway")

var _ PaymentGateway = (*SimGateway)(nil)

// SimConfig configures a SimGateway. The zero value answers at once and
// never fails.
type SimConfig struct {
	Latency  time.Duration // how long each call takes; default 0
	FailRate float64       // probability in [0, 1] that a call fails with ErrDeclined; default 0
	Rand     *rand.Rand    // source of failures, seeded for reproducible tests; default the global source
}

// SimGateway simulates a payment gateway: each call waits Latency, then
// fails with probability FailRate. Results are derived from the arguments,
// so retries see the same order and payment reference.
type SimGateway struct {
	cfg SimConfig
	mu  sync.Mutex // guards cfg.Rand, which is not safe for concurrent use
}

// NewSimGateway returns a simulated gateway.
func NewSimGateway(cfg SimConfig) *SimGateway { return &SimGateway{cfg: cfg} }

// FetchOrder returns made-up details for orderID, the same every time.
func (g *SimGateway) FetchOrder(ctx context.Context, orderID, _ string) (Details, error) {
	if err := g.call(ctx); err != nil {
		return Details{}, fmt.Errorf("fetch order %q: %w", orderID, err)
	}
	h := hash(orderID)
	return Details{
		ID:          orderID,
		AmountCents: 100 + int64(h%100_000),
		Currency:    [...]string{"EUR", "USD", "GBP"}[h%3],
		Items:       1 + int(h>>32)%5,
	}, nil
}

// Authorize returns a payment reference derived from the idempotency key,
// so that a retried authorization yields the same reference.
func (g *SimGateway) Authorize(ctx context.Context, order Details, idempotencyKey string) (string, error) {
	if err := g.call(ctx); err != nil {
		return "", fmt.Errorf("authorize order %q: %w", order.ID, err)
	}
	return fmt.Sprintf("pay_%016x", hash(order.ID+"\x00"+idempotencyKey)), nil
}

// Capture captures an authorized payment.
func (g *SimGateway) Capture(ctx context.Context, paymentRef, _ string) error {
	if err := g.call(ctx); err != nil {
		return fmt.Errorf("capture %q: %w", paymentRef, err)
	}
	return nil
}

func (g *SimGateway) call(ctx context.Context) error {
	if g.cfg.Latency > 0 {
		t := time.NewTimer(g.cfg.Latency)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	} else if err := ctx.Err(); err != nil {
		return err
	}
	if g.cfg.FailRate > 0 && g.float() < g.cfg.FailRate {
		return ErrDeclined
	}
	return nil
}

func (g *SimGateway) float() float64 {
	if g.cfg.Rand == nil {
		return rand.Float64()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg.Rand.Float64()
}

func hash(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}
