package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/internal/cli"
)

// validateDLQ checks "dlq list" and "dlq replay SEQ|--all" and sets o.seq.
func (o *options) validateDLQ() error {
	if len(o.args) == 0 {
		return cli.Usagef("dlq takes list or replay")
	}
	cmd, rest := o.args[0], o.args[1:]
	switch {
	case cmd == "list" && len(rest) > 0:
		return cli.Usagef("dlq list takes no arguments, got %d", len(rest))
	case cmd == "list" && o.limit < 0:
		return cli.Usagef("--limit %d: must not be negative", o.limit)
	case cmd == "list":
		return nil
	case cmd != "replay":
		return cli.Usagef("dlq %s: want list or replay", cmd)
	case o.all && len(rest) > 0:
		return cli.Usagef("dlq replay takes SEQ or --all, not both")
	case o.all:
		return nil
	case len(rest) != 1:
		return cli.Usagef("dlq replay takes one SEQ or --all, got %d arguments", len(rest))
	}
	seq, err := strconv.ParseUint(rest[0], 10, 64)
	if err != nil || seq == 0 {
		return cli.Usagef("dlq replay %q: SEQ is a dead letter's number, as dlq list shows it", rest[0])
	}
	o.seq = seq
	return nil
}

func (c command) dlq(ctx context.Context, conn *client.Client, o options) error {
	ctx, cancel := withTimeout(ctx, o.timeout)
	defer cancel()
	if o.args[0] == "list" {
		return c.dlqList(ctx, conn, o)
	}
	return c.dlqReplay(ctx, conn, o)
}

// dlqEntry is the JSON form of a dead letter.
type dlqEntry struct {
	Seq       uint64              `json:"seq"`
	Workflow  string              `json:"workflow"`
	Key       string              `json:"key"`
	JobID     string              `json:"job_id"`
	Reason    string              `json:"reason"`
	Subject   string              `json:"subject"`
	Data      any                 `json:"data"` // the body as JSON if it is JSON, else as a string
	Headers   map[string][]string `json:"headers"`
	At        time.Time           `json:"at"`
	Delivered uint64              `json:"delivered"`
}

func (c command) dlqList(ctx context.Context, conn *client.Client, o options) error {
	es, err := conn.DeadLetters(ctx, o.workflow, o.limit)
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(c.stdout)
		for _, e := range es {
			var data any = string(e.Data)
			if json.Valid(e.Data) {
				data = json.RawMessage(e.Data)
			}
			if err := enc.Encode(dlqEntry{e.Sequence, e.Workflow, e.Key, e.JobID, e.Reason, e.Subject,
				data, e.Headers, e.At, e.Delivered}); err != nil {
				return err
			}
		}
		return nil
	}
	if len(es) == 0 {
		_, err := fmt.Fprintln(c.stdout, "no dead letters")
		return err
	}
	for _, e := range es {
		job := e.JobID
		if job == "" {
			job = "-"
		}
		fmt.Fprintf(c.stdout, "%d %s %q %s %s\n", e.Sequence, e.Key, e.Reason, job, e.At.Format(time.RFC3339))
	}
	_, err = fmt.Fprintf(c.stdout, "%d dead letter%s\n", len(es), plural(len(es)))
	return err
}

// dlqReplay replays one dead letter or all, printing each new job id; with
// --all it goes on past a failure, reporting it, unless nothing more can go.
func (c command) dlqReplay(ctx context.Context, conn *client.Client, o options) error {
	seqs := []uint64{o.seq}
	if o.all {
		es, err := conn.DeadLetters(ctx, o.workflow, 0)
		if err != nil {
			return err
		}
		if len(es) == 0 {
			fmt.Fprintln(c.stderr, "no dead letters")
			return nil
		}
		seqs = seqs[:0]
		for _, e := range es {
			seqs = append(seqs, e.Sequence)
		}
	}
	enc := json.NewEncoder(c.stdout)
	replayed := 0
	for _, seq := range seqs {
		ack, err := conn.Replay(ctx, o.workflow, seq)
		if err != nil && !o.all {
			return err
		}
		if err != nil {
			fmt.Fprintf(c.stderr, "dead letter %d: %v\n", seq, err)
			if ctx.Err() != nil || errors.Is(err, client.ErrQueueFull) || errors.Is(err, client.ErrNotProvisioned) {
				break
			}
			continue
		}
		replayed++
		if o.json {
			err = enc.Encode(map[string]any{"seq": seq, "job_id": ack.ID, "sequence": ack.Sequence, "duplicate": ack.Duplicate})
		} else {
			_, err = fmt.Fprintln(c.stdout, ack.ID)
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(c.stderr, "replayed %d of %d dead letter%s\n", replayed, len(seqs), plural(len(seqs)))
	if failed := len(seqs) - replayed; failed > 0 {
		return fmt.Errorf("%d of %d dead letters not replayed", failed, len(seqs))
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
