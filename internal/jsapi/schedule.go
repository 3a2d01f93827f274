package jsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/orderly-dev/orderly/contract"
)

// The record of a delayed event (contract.ScheduledJob) is read and
// written by both a producer (scheduling, cancelling) and the worker
// (taking the fired event), always with compare-and-set: the record's
// revision decides which of a cancel and a worker comes first.

// JetStream's names for message schedules.
const (
	NatsSchedule         = "Nats-Schedule"
	NatsScheduleTarget   = "Nats-Schedule-Target"
	NatsScheduleTimeZone = "Nats-Schedule-Time-Zone"
	NatsScheduler        = "Nats-Scheduler"     // on a firing: the schedule's subject
	NatsScheduleNext     = "Nats-Schedule-Next" // on a firing: the next fire time, or "purge"
)

var (
	// ErrNoRecord: no record of a delayed event holds the job id.
	ErrNoRecord = errors.New("no record of a delayed event")
	// ErrStaleRecord: the record changed since it was read (or exists,
	// for a create).
	ErrStaleRecord = errors.New("record changed meanwhile")
)

// ScheduledJobGetSubject is the direct get of the record of the delayed
// event with job id.
func ScheduledJobGetSubject(workflow, id string) string {
	bucket := contract.JobsBucket(workflow)
	return "$JS.API.DIRECT.GET.KV_" + bucket + ".$KV." + bucket + "." + contract.ScheduledJobKey(id)
}

// GetScheduledJob reads the record of the delayed event with job id and
// its revision, with one direct get; ErrNoRecord if there is none.
func GetScheduledJob(ctx context.Context, nc *nats.Conn, workflow, id string) (contract.ScheduledJob, uint64, error) {
	resp, err := nc.RequestWithContext(ctx, ScheduledJobGetSubject(workflow, id), nil)
	if errors.Is(err, nats.ErrNoResponders) {
		return contract.ScheduledJob{}, 0, fmt.Errorf("delayed job %s: %w", id, ErrNotProvisioned)
	}
	if err != nil {
		return contract.ScheduledJob{}, 0, fmt.Errorf("delayed job %s: %w", id, err)
	}
	if len(resp.Data) == 0 {
		switch st := resp.Header.Get("Status"); st {
		case "404":
			return contract.ScheduledJob{}, 0, fmt.Errorf("delayed job %s: %w", id, ErrNoRecord)
		case "":
		default:
			return contract.ScheduledJob{}, 0, fmt.Errorf("delayed job %s: %s %s", id, st, resp.Header.Get("Description"))
		}
	}
	rev, _ := strconv.ParseUint(resp.Header.Get("Nats-Sequence"), 10, 64)
	if op := resp.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		return contract.ScheduledJob{}, rev, fmt.Errorf("delayed job %s: %w", id, ErrNoRecord)
	}
	j := contract.ScheduledJob{ID: id}
	if err := json.Unmarshal(resp.Data, &j); err != nil {
		return contract.ScheduledJob{}, 0, fmt.Errorf("delayed job %s: bad record %q: %w", id, resp.Data, err)
	}
	return j, rev, nil
}

// PutScheduledJob writes the record j if its revision is still rev (0:
// only if there is none, or only a deleted one at revision rev) and returns
// the new revision; ErrStaleRecord if it changed meanwhile.
func PutScheduledJob(ctx context.Context, js jetstream.JetStream, workflow string, j contract.ScheduledJob, rev uint64) (uint64, error) {
	body, err := json.Marshal(&j)
	if err != nil {
		return 0, fmt.Errorf("delayed job %s: %w", j.ID, err)
	}
	m := nats.NewMsg("$KV." + contract.JobsBucket(workflow) + "." + contract.ScheduledJobKey(j.ID))
	m.Data = body
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	ack, err := js.PublishMsg(ctx, m)
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		return 0, fmt.Errorf("delayed job %s: %w", j.ID, ErrStaleRecord)
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return 0, fmt.Errorf("delayed job %s: %w", j.ID, ErrNotProvisioned)
	case err != nil:
		return 0, fmt.Errorf("delayed job %s: %w", j.ID, err)
	}
	return ack.Sequence, nil
}
