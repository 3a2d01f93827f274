// Package jsapi holds the few JetStream requests and replies that both the
// worker runtime (package queue) and the producer client (package client)
// make: the errors a publish maps to, the reading of a job id's claim, the
// reply multiplexer their pipelined requests share, and which headers an
// event's copies keep. What only one of them needs stays with it.
package jsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
)

// Publish errors, re-exported by the packages that publish.
var (
	ErrQueueFull       = errors.New("queue full")
	ErrPayloadTooLarge = errors.New("payload too large")
	ErrNotProvisioned  = errors.New("workflow not provisioned (no stream takes its events; has a worker started?)")
	ErrNoJob           = errors.New("no job holds the id")
)

// ErrCodeStoreFailed is JetStream's error code (nats-server's
// JSStreamStoreFailedF) for a message the stream did not store. The
// discard-new streams Orderly publishes to (events, dead letters) have no
// per-subject limit and a largest message far below the store's own, so
// there it means the stream holds its limit of messages or bytes; the
// description says which.
const ErrCodeStoreFailed jetstream.ErrorCode = 10077

// PublishError says why a publish to subject failed, as one of the errors
// above where it is one: "publish <subject>: ...". It goes by JetStream's
// error codes, never by the text of a message.
func PublishError(subject string, err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.ErrorCode == ErrCodeStoreFailed:
		return fmt.Errorf("publish %s: %w: the stream holds its limit of unprocessed events; retry later or add workers", subject, ErrQueueFull)
	case errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum), errors.Is(err, nats.ErrMaxPayload):
		return fmt.Errorf("publish %s: %w: %v", subject, ErrPayloadTooLarge, err)
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("publish %s: %w", subject, ErrNotProvisioned)
	}
	return fmt.Errorf("publish %s: %w", subject, err)
}

// JobGetSubject is the direct get of the claim of job id in workflow's job
// bucket: one request for the bucket's last message on the id's subject,
// which a producer's permissions allow (no stream look-up first).
func JobGetSubject(workflow, id string) string {
	bucket := contract.JobsBucket(workflow)
	return "$JS.API.DIRECT.GET.KV_" + bucket + ".$KV." + bucket + "." + contract.JobKey(id)
}

// JobsDirectSubject is the batched direct get of workflow's job bucket: a
// DirectRequest whose MultiLast lists JobSubject's reads the claims of many
// job ids at once (nats-server 2.11 and later).
func JobsDirectSubject(workflow string) string {
	return "$JS.API.DIRECT.GET.KV_" + contract.JobsBucket(workflow)
}

// JobSubject is the subject that holds the claim of job id in workflow's job
// bucket.
func JobSubject(workflow, id string) string {
	return "$KV." + contract.JobsBucket(workflow) + "." + contract.JobKey(id)
}

// GetJob reads the claim of job id with one direct get; ErrNoJob if none
// holds it.
func GetJob(ctx context.Context, nc *nats.Conn, workflow, id string) (contract.Job, error) {
	resp, err := nc.RequestWithContext(ctx, JobGetSubject(workflow, id), nil)
	return ParseJob(id, resp, err)
}

// ParseJob reads the answer (resp, or the error err instead) to the direct
// get of job id's claim.
func ParseJob(id string, resp *nats.Msg, err error) (contract.Job, error) {
	if errors.Is(err, nats.ErrNoResponders) {
		// No bucket: a workflow provisioned before job claims existed.
		return contract.Job{}, fmt.Errorf("job %s: %w", id, ErrNoJob)
	}
	if err != nil {
		return contract.Job{}, fmt.Errorf("job %s: %w", id, err)
	}
	if len(resp.Data) == 0 {
		switch st := resp.Header.Get("Status"); st {
		case "404", "503": // no message; no responders, as above
			return contract.Job{}, fmt.Errorf("job %s: %w", id, ErrNoJob)
		case "":
		default:
			return contract.Job{}, fmt.Errorf("job %s: %s %s", id, st, resp.Header.Get("Description"))
		}
	}
	if op := resp.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return contract.Job{}, fmt.Errorf("job %s: %w", id, ErrNoJob)
	}
	j := contract.Job{ID: id}
	if err := json.Unmarshal(resp.Data, &j); err != nil {
		return contract.Job{}, fmt.Errorf("job %s: bad claim %q: %w", id, resp.Data, err)
	}
	return j, nil
}

const dlqHeaderPrefix = "orderly-dlq-"

// CopyHeaders adds src's headers to dst, except JetStream's Nats-* control
// headers (on a copy they would act on the stream it goes to) and Orderly's
// dead-letter headers: what a dead letter keeps of its event, and a replay
// of its dead letter.
func CopyHeaders(dst, src nats.Header) {
	for k, vs := range src {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "nats-") || strings.HasPrefix(lk, dlqHeaderPrefix) {
			continue
		}
		dst[k] = append([]string(nil), vs...)
	}
}
