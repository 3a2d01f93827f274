package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/cli"
)

// bulkLine is one line of a --file input.
type bulkLine struct {
	Key   string          `json:"key"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data,omitempty"`
	ID    string          `json:"id,omitempty"`
}

// summary is the outcome of a --file run.
type summary struct {
	Sent       int     `json:"sent"`       // stored
	Duplicates int     `json:"duplicates"` // stored before, within the duplicate window
	Failed     int     `json:"failed"`     // malformed, refused, or not acknowledged
	Seconds    float64 `json:"seconds"`
	Rate       float64 `json:"rate"` // events stored or found duplicate per second
}

type pendingLine struct {
	n int
	p *client.PendingPublish
}

// bulk publishes every line of o.file with at most o.window publishes
// awaiting their acknowledgement. A bad line is counted and reported; the
// rest still go. On ctx's end it stops reading and still collects the
// acknowledgements of what it sent.
func (c command) bulk(ctx context.Context, conn *client.Client, o options) error {
	r := c.stdin
	if o.file != "-" {
		f, err := os.Open(o.file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	var (
		sum     summary
		start   = time.Now()
		tty     = cli.IsTerminal(c.stderr)
		drawn   time.Time
		pending = make(chan pendingLine, o.window) // FIFO of publishes in flight
	)
	fail := func(n int, err error) {
		sum.Failed++
		if tty {
			fmt.Fprint(c.stderr, "\r\033[K")
		}
		fmt.Fprintf(c.stderr, "line %d: %v\n", n, err)
	}
	settle := func(pl pendingLine) {
		wctx, cancel := withTimeout(context.WithoutCancel(ctx), o.timeout)
		defer cancel()
		switch ack, err := pl.p.Wait(wctx); {
		case err != nil:
			fail(pl.n, err)
		case ack.Duplicate:
			sum.Duplicates++
		default:
			sum.Sent++
		}
	}

	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for n := 1; ctx.Err() == nil && sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l bulkLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			fail(n, fmt.Errorf("not a JSON object: %v", err))
			continue
		}
		opts := []client.PublishOption{client.WithTraceContext(ctx)}
		if l.ID != "" {
			opts = append(opts, client.WithJobID(l.ID))
		}
		if len(pending) == cap(pending) {
			settle(<-pending)
		}
		p, err := conn.PublishAsync(o.workflow, l.Key, contract.Envelope{Event: l.Event, Data: l.Data}, opts...)
		if err != nil {
			fail(n, err)
			continue
		}
		pending <- pendingLine{n, p}
		if tty && time.Since(drawn) > 200*time.Millisecond {
			drawn = time.Now()
			fmt.Fprintf(c.stderr, "\r\033[Ksent %d, duplicates %d, failed %d, in flight %d",
				sum.Sent, sum.Duplicates, sum.Failed, len(pending))
		}
	}
	close(pending)
	for pl := range pending {
		settle(pl)
	}
	sum.Seconds = time.Since(start).Seconds()
	if sum.Seconds > 0 {
		sum.Rate = float64(sum.Sent+sum.Duplicates) / sum.Seconds
	}
	if tty {
		fmt.Fprint(c.stderr, "\r\033[K")
	}
	fmt.Fprintf(c.stderr, "sent %d, duplicates %d, failed %d in %.2fs (%.0f events/s)\n",
		sum.Sent, sum.Duplicates, sum.Failed, sum.Seconds, sum.Rate)
	if o.json {
		if err := json.NewEncoder(c.stdout).Encode(sum); err != nil {
			return err
		}
	}
	switch {
	case sc.Err() != nil:
		return fmt.Errorf("read %s: %w", o.file, sc.Err())
	case ctx.Err() != nil:
		return fmt.Errorf("interrupted: %w", ctx.Err())
	case sum.Failed > 0:
		return fmt.Errorf("%d of %d events failed", sum.Failed, sum.Sent+sum.Duplicates+sum.Failed)
	}
	return nil
}
