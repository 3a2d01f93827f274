package order

import (
	"context"
	"errors"

	"github.com/orderly-dev/orderly/worker"
)

// NewWorkflow returns the order workflow ready for a worker: the machine of
// cfg with its three actions calling gw. A declined payment is not retried;
// any other gateway error is, with backoff.
func NewWorkflow(cfg Config, gw PaymentGateway) (worker.Workflow, error) {
	return worker.NewWorkflow(New(cfg), map[string]worker.ActionFunc[Data]{
		ActionFetchOrder: func(ctx context.Context, c worker.ActionCall[Data]) (any, error) {
			d, err := gw.FetchOrder(ctx, c.Key, c.IdempotencyKey)
			return d, classify(err)
		},
		ActionAuthorizePayment: func(ctx context.Context, c worker.ActionCall[Data]) (any, error) {
			if c.Data.Order == nil {
				return nil, worker.Permanent(ErrOrderNotFetched)
			}
			ref, err := gw.Authorize(ctx, *c.Data.Order, c.IdempotencyKey)
			return Authorization{PaymentRef: ref}, classify(err)
		},
		ActionCapturePayment: func(ctx context.Context, c worker.ActionCall[Data]) (any, error) {
			return nil, classify(gw.Capture(ctx, c.Data.PaymentRef, c.IdempotencyKey))
		},
	})
}

func classify(err error) error {
	if errors.Is(err, ErrDeclined) {
		return worker.Permanent(err)
	}
	return err
}
