package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/internal/cli"
)

// The inventory's subcommands: stats, keys and stuck.
//
// Exit status: a flag that does not parse or does not apply, a missing
// --state, a negative --older-than, a --limit of 0 or less is a usage
// error (2), found before connecting; a state the workflow does not have,
// a workflow no worker has described or whose inventory is off is refused
// (1), once the server says so.

// defaultStuckAge is how long a key must have waited for enqueue stuck to
// list it, unless --older-than says otherwise.
const defaultStuckAge = 10 * time.Minute

// inventoryOptions are the flags of stats, keys and stuck.
type inventoryOptions struct {
	state        string
	olderThan    time.Duration
	olderThanSet bool
	limitSet     bool
	workflowSet  bool // --workflow (or its variable) given: stats shows that one alone
}

func (v *inventoryOptions) register(fs *pflag.FlagSet) {
	fs.StringVar(&v.state, "state", "", "keys: the `STATE` whose keys to list (required)")
	fs.DurationVar(&v.olderThan, "older-than", 0, "keys: only keys in the state for longer than `DURATION`; stuck: keys waiting for longer than it (default 10m)")
}

// check refuses, as usage errors, inventory flags given to a command they
// do not apply to, and values no query can take.
func (v *inventoryOptions) check(fs *pflag.FlagSet, o *options) error {
	v.olderThanSet, v.limitSet = fs.Changed("older-than"), fs.Changed("limit")
	v.workflowSet = fs.Changed("workflow")
	switch {
	case fs.Changed("state") && o.sub != "keys":
		return cli.Usagef("--state applies only to keys")
	case v.olderThanSet && o.sub != "keys" && o.sub != "stuck":
		return cli.Usagef("--older-than applies only to keys and stuck")
	case o.sub != "keys" && o.sub != "stuck" && o.sub != "stats":
		return nil
	case len(o.args) > 0:
		return cli.Usagef("%s takes no arguments, got %d (flags: --workflow, --json%s)", o.sub, len(o.args), map[string]string{
			"stats": "", "keys": ", --state, --older-than, --limit", "stuck": ", --older-than, --limit"}[o.sub])
	case o.sub == "keys" && v.state == "":
		return cli.Usagef("keys needs --state STATE (enqueue stats lists the states)")
	case v.olderThan < 0:
		return cli.Usagef("--older-than %s: must not be negative", v.olderThan)
	case v.limitSet && o.limit <= 0:
		return cli.Usagef("--limit %d: must be at least 1", o.limit)
	case v.limitSet && o.limit > client.MaxKeysLimit:
		return cli.Usagef("--limit %d: at most %d", o.limit, client.MaxKeysLimit)
	}
	if o.sub == "stuck" && !v.olderThanSet {
		v.olderThan = defaultStuckAge
	}
	return nil
}

// stats prints the inventory of the workflow --workflow names, or, without
// it, of every workflow a worker has described.
func (c command) stats(ctx context.Context, conn *client.Client, o options) error {
	ctx, cancel := withTimeout(ctx, o.timeout)
	defer cancel()
	names := []string{o.workflow}
	if !o.inv.workflowSet {
		wfs, err := conn.Workflows(ctx)
		if err != nil {
			return err
		}
		if len(wfs) == 0 {
			return errors.New("no workflow described yet: has a worker of this version started?")
		}
		names = names[:0]
		for _, wf := range wfs {
			names = append(names, wf.Name)
		}
	}
	var failed error
	for _, name := range names {
		s, err := conn.Stats(ctx, name)
		if errors.Is(err, client.ErrNoInventory) && len(names) > 1 {
			fmt.Fprintf(c.stderr, "%s: inventory off (its workers run with --inventory=false)\n", name)
			continue
		}
		if err != nil {
			if len(names) == 1 {
				return err
			}
			fmt.Fprintf(c.stderr, "enqueue: %v\n", err)
			failed = fmt.Errorf("stats of %s: %w", name, err)
			continue
		}
		if o.json {
			if err := json.NewEncoder(c.stdout).Encode(s); err != nil {
				return err
			}
			continue
		}
		info, err := conn.Workflow(ctx, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s: %d key%s, %d with work pending, %d delayed event%s, %d dead letter%s (at %s)\n",
			name, s.Keys, plural(s.Keys), s.PendingWork, s.Scheduled, plural(s.Scheduled),
			s.DeadLetters, plural(s.DeadLetters), s.At.Format(time.RFC3339))
		// One line a state: its name, its count right-aligned, and whether
		// it is terminal.
		nameW, countW := 0, 1
		for _, st := range info.States {
			nameW = max(nameW, len(st.Name))
			countW = max(countW, len(strconv.Itoa(s.States[st.Name])))
		}
		var b strings.Builder
		for _, st := range info.States {
			fmt.Fprintf(&b, "  %-*s  %*d", nameW, st.Name, countW, s.States[st.Name])
			if st.Terminal {
				b.WriteString("  terminal")
			}
			b.WriteByte('\n')
		}
		if _, err := io.WriteString(c.stdout, b.String()); err != nil {
			return err
		}
	}
	return failed
}

// keysLimit is --limit, or the client's default when it is not given.
func (o options) keysLimit() int {
	if o.inv.limitSet {
		return o.limit
	}
	return client.DefaultKeysLimit
}

// keys lists the keys of --state, oldest first.
func (c command) keys(ctx context.Context, conn *client.Client, o options) error {
	ctx, cancel := withTimeout(ctx, o.timeout)
	defer cancel()
	limit := o.keysLimit()
	keys, err := conn.Keys(ctx, o.workflow, client.KeysQuery{State: o.inv.state, OlderThan: o.inv.olderThan, Limit: limit})
	if err != nil {
		return err
	}
	now := time.Now()
	for _, k := range keys {
		if o.json {
			if err := json.NewEncoder(c.stdout).Encode(k); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintf(c.stdout, "%s version=%d since=%s (%s)\n", k.Key, k.Version, k.Since.Format(time.RFC3339Nano), ago(now, k.Since))
	}
	switch {
	case len(keys) == limit:
		fmt.Fprintf(c.stderr, "listed the %d oldest; --limit lists more\n", limit)
	case len(keys) == 0 && !o.json:
		// Said where a person reads it; a script still gets nothing.
		fmt.Fprintf(c.stderr, "no key in state %s%s\n", o.inv.state, olderThanNote(o))
	}
	return nil
}

// olderThanNote is " for longer than D" when --older-than narrowed a list.
func olderThanNote(o options) string {
	if o.inv.olderThan <= 0 {
		return ""
	}
	return " for longer than " + o.inv.olderThan.String()
}

// stuck lists the keys waiting for longer than --older-than.
func (c command) stuck(ctx context.Context, conn *client.Client, o options) error {
	ctx, cancel := withTimeout(ctx, o.timeout)
	defer cancel()
	limit := o.keysLimit()
	keys, err := conn.Stuck(ctx, o.workflow, o.inv.olderThan, limit)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, k := range keys {
		if o.json {
			if err := json.NewEncoder(c.stdout).Encode(k); err != nil {
				return err
			}
			continue
		}
		writeStuck(c.stdout, now, k)
	}
	switch {
	case len(keys) == limit:
		fmt.Fprintf(c.stderr, "listed the %d waiting longest; --limit lists more\n", limit)
	case len(keys) == 0 && !o.json:
		fmt.Fprintf(c.stderr, "no key stuck%s\n", olderThanNote(o))
	}
	return nil
}

// writeStuck writes one line for a stuck key.
func writeStuck(w io.Writer, now time.Time, k client.StuckKey) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s version=%d", k.Key, k.State, k.Version)
	if !k.Since.IsZero() {
		fmt.Fprintf(&b, " since=%s (%s)", k.Since.Format(time.RFC3339Nano), ago(now, k.Since))
	}
	fmt.Fprintf(&b, " reason=%s", k.Reason)
	if !k.PendingSince.IsZero() {
		fmt.Fprintf(&b, " pending_since=%s (%s)", k.PendingSince.Format(time.RFC3339Nano), ago(now, k.PendingSince))
	}
	if k.Action != "" {
		fmt.Fprintf(&b, " action=%s attempt=%d", k.Action, k.Attempt)
	}
	if k.LastError != "" {
		fmt.Fprintf(&b, " last_error=%q", k.LastError)
	}
	fmt.Fprintln(w, b.String())
}

// ago says how long before now t was, to the second.
func ago(now, t time.Time) string {
	return now.Sub(t).Truncate(time.Second).String() + " ago"
}
