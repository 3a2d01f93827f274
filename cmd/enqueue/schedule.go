package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/contract"
	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/cron"
)

// subcommands are the first arguments that name a subcommand, not a key.
var subcommands = []string{"status", "watch", "history", "dlq", "cancel", "schedule", "stats", "keys", "stuck"}

// timeOptions are the flags of delayed events and recurring schedules.
//
// Exit status for them: a value that does not parse, two that exclude each
// other, or one given to a command it does not apply to is a usage error
// (2); a well-formed value that the server or Orderly refuses (a zero or
// negative --in, an --at in the past, an --every under a second, a bad cron
// expression, an unknown zone) is refused (1). Both are found before
// anything is stored, most before connecting.
type timeOptions struct {
	in                time.Duration
	at                string
	atTime            time.Time
	every             time.Duration
	cron, tz          string
	inSet, atSet      bool
	everySet, cronSet bool
}

func (t *timeOptions) register(fs *pflag.FlagSet) {
	fs.DurationVar(&t.in, "in", 0, "publish: deliver the event `DURATION` from now (e.g. 2s, 90m) instead of at once; the job id is printed at once")
	fs.StringVar(&t.at, "at", "", "publish: deliver the event at `TIME` (RFC 3339, e.g. 2026-11-30T09:00:00+01:00)")
	fs.DurationVar(&t.every, "every", 0, "schedule add: fire every `DURATION` (at least 1s), from when it is added")
	fs.StringVar(&t.cron, "cron", "", "schedule add: fire on the cron `EXPR`: six fields, second minute hour day-of-month month day-of-week (e.g. \"0 */5 * * * *\"), the classic five (minute first, e.g. \"*/5 * * * *\"), or @hourly, @daily, @weekly, @monthly, @yearly")
	fs.StringVar(&t.tz, "tz", "", "schedule add --cron: the `ZONE` the cron expression is read in (IANA name, e.g. Europe/Berlin; default UTC)")
}

// check refuses, as usage errors, time flags that do not parse, exclude
// each other or do not apply to the command.
func (t *timeOptions) check(fs *pflag.FlagSet, o *options) error {
	t.inSet, t.atSet = fs.Changed("in"), fs.Changed("at")
	t.everySet, t.cronSet = fs.Changed("every"), fs.Changed("cron")
	publishing := o.sub == "" && o.file == ""
	adding := o.sub == "schedule" && len(o.args) > 0 && o.args[0] == "add"
	for _, f := range []struct {
		name string
		ok   bool
		what string
	}{
		{"in", publishing, "publishing KEY EVENT"}, {"at", publishing, "publishing KEY EVENT"},
		{"every", adding, "schedule add"}, {"cron", adding, "schedule add"}, {"tz", adding, "schedule add --cron"},
	} {
		if fs.Changed(f.name) && !f.ok {
			return cli.Usagef("--%s applies only to %s", f.name, f.what)
		}
	}
	switch {
	case t.inSet && t.atSet:
		return cli.Usagef("--in and --at exclude each other: give one")
	case t.atSet:
		at, err := time.Parse(time.RFC3339, t.at)
		if err != nil {
			return cli.Usagef("--at %q: want an RFC 3339 time such as 2026-11-30T09:00:00Z or 2026-11-30T10:00:00+01:00", t.at)
		}
		t.atTime = at
	case adding && t.everySet && t.cronSet:
		return cli.Usagef("--every and --cron exclude each other: give one")
	case adding && !t.everySet && !t.cronSet:
		return cli.Usagef("schedule add needs --every DURATION or --cron \"EXPR\"")
	case adding && fs.Changed("tz") && !t.cronSet:
		return cli.Usagef("--tz applies only with --cron")
	}
	return nil
}

// refuse refuses, before connecting, well-formed values that the client
// (and the server) would refuse anyway: exit 1, not a usage error.
func (t *timeOptions) refuse(o *options, now time.Time) error {
	switch {
	case t.inSet && t.in <= 0:
		return fmt.Errorf("refused: --in %s: the delay must be positive", t.in)
	case t.atSet && t.atTime.Before(now.Add(-time.Second)):
		return fmt.Errorf("refused: --at %s is in the past (now is %s)", t.at, now.Format(time.RFC3339))
	case t.everySet || t.cronSet:
		if _, _, err := t.schedule().Pattern(now); err != nil {
			return fmt.Errorf("refused: %w", err)
		}
	}
	return nil
}

// schedule is the when of "schedule add".
func (t *timeOptions) schedule() scheduleWhen {
	return scheduleWhen{every: t.every, cron: t.cron, tz: t.tz}
}

type scheduleWhen struct {
	every    time.Duration
	cron, tz string
}

// Pattern is what the server will be given, checked as it checks it.
func (w scheduleWhen) Pattern(now time.Time) (string, cron.Spec, error) {
	p := cron.Expand(w.cron)
	if w.cron == "" {
		p = "@every " + w.every.String()
	}
	spec, _, err := cron.Pattern(p, w.tz, now)
	return p, spec, err
}

func (t *timeOptions) publishOptions() []client.PublishOption {
	switch {
	case t.inSet:
		return []client.PublishOption{client.WithDelay(t.in)}
	case t.atSet:
		return []client.PublishOption{client.WithAt(t.atTime)}
	}
	return nil
}

// validateSchedule checks "schedule add NAME KEY EVENT [DATA_JSON]",
// "schedule list" and "schedule rm NAME".
func (o *options) validateSchedule() error {
	if len(o.args) == 0 {
		return cli.Usagef("schedule takes add, list or rm")
	}
	cmd, n := o.args[0], len(o.args)-1
	switch {
	case cmd == "add" && (n < 3 || n > 4):
		return cli.Usagef("schedule add takes NAME KEY EVENT [DATA_JSON], got %d arguments", n)
	case cmd == "list" && n != 0:
		return cli.Usagef("schedule list takes no arguments, got %d", n)
	case cmd == "rm" && n != 1:
		return cli.Usagef("schedule rm takes one NAME, got %d arguments", n)
	case cmd != "add" && cmd != "list" && cmd != "rm":
		return cli.Usagef("schedule %s: want add, list or rm", cmd)
	}
	if cmd == "add" || cmd == "rm" {
		if err := contract.ValidateScheduleName(o.args[1]); err != nil {
			return err
		}
	}
	if cmd == "add" {
		if err := contract.ValidateKey(o.args[2]); err != nil {
			return err
		}
		if n == 4 && !json.Valid([]byte(o.args[4])) {
			return fmt.Errorf("DATA_JSON is not JSON: %s", o.args[4])
		}
	}
	return nil
}

func (c command) cancel(ctx context.Context, conn *client.Client, o options) error {
	ctx, cancel := withTimeout(ctx, o.timeout)
	defer cancel()
	id := o.args[0]
	if err := conn.Cancel(ctx, o.workflow, id); err != nil {
		return err
	}
	if o.json {
		return json.NewEncoder(c.stdout).Encode(map[string]any{"job_id": id, "cancelled": true})
	}
	_, err := fmt.Fprintln(c.stdout, contract.JobCancelled) // "cancelled"
	return err
}

func (c command) schedule(ctx context.Context, conn *client.Client, o options) error {
	ctx, cancel := withTimeout(ctx, o.timeout)
	defer cancel()
	switch o.args[0] {
	case "add":
		s := client.Schedule{Name: o.args[1], Key: o.args[2], Event: o.args[3], Every: o.time.every, Cron: o.time.cron, TimeZone: o.time.tz}
		if len(o.args) == 5 {
			s.Data = json.RawMessage(o.args[4])
		}
		added, err := conn.AddSchedule(ctx, o.workflow, s)
		if err != nil {
			return err
		}
		if o.json {
			return json.NewEncoder(c.stdout).Encode(scheduleEntry(added))
		}
		_, err = fmt.Fprintf(c.stdout, "added %s: %s %s %s, next at %s\n", added.Name, added.Key, added.Event, specOf(added), nextIn(added))
		return err
	case "rm":
		if err := conn.RemoveSchedule(ctx, o.workflow, o.args[1]); err != nil {
			return err
		}
		_, err := fmt.Fprintf(c.stdout, "removed %s\n", o.args[1])
		return err
	}
	list, err := conn.Schedules(ctx, o.workflow)
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(c.stdout)
		for _, s := range list {
			if err := enc.Encode(scheduleEntry(s)); err != nil {
				return err
			}
		}
		return nil
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stderr, "no schedules")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKEY\tEVENT\tSPEC\tNEXT")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Name, s.Key, s.Event, specOf(s), nextIn(s))
	}
	return tw.Flush()
}

// nextIn is s's next fire time in RFC 3339, in its time zone; "-" if
// unknown.
func nextIn(s client.Schedule) string {
	if s.Next.IsZero() {
		return "-"
	}
	if loc, err := cron.LoadZone(s.TimeZone); err == nil && s.TimeZone != "" {
		return s.Next.In(loc).Format(time.RFC3339)
	}
	return s.Next.UTC().Format(time.RFC3339)
}

// specOf is a schedule's when, as list shows it: "@every 1s" or
// "0 30 9 * * mon-fri (Europe/Berlin)".
func specOf(s client.Schedule) string {
	if s.TimeZone != "" {
		return s.Spec + " (" + s.TimeZone + ")"
	}
	return s.Spec
}

// scheduleJSON is the JSON form of a schedule.
type scheduleJSON struct {
	Name     string          `json:"name"`
	Key      string          `json:"key"`
	Event    string          `json:"event"`
	Data     json.RawMessage `json:"data,omitempty"`
	Spec     string          `json:"spec"`
	TimeZone string          `json:"time_zone,omitempty"`
	Next     *time.Time      `json:"next,omitempty"`
	Added    time.Time       `json:"added"`
}

func scheduleEntry(s client.Schedule) scheduleJSON {
	e := scheduleJSON{Name: s.Name, Key: s.Key, Event: s.Event, Data: s.Data, Spec: s.Spec, TimeZone: s.TimeZone, Added: s.Added}
	if !s.Next.IsZero() {
		next := s.Next
		if loc, err := cron.LoadZone(s.TimeZone); err == nil && s.TimeZone != "" {
			next = next.In(loc)
		}
		e.Next = &next
	}
	return e
}
