package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/orderly-dev/orderly/client"
	"github.com/orderly-dev/orderly/internal/cli"
)

// checkWatch refuses, as usage errors, --since given to anything but
// watch, a negative one, and --since with --all.
func (o *options) checkWatch(fs *pflag.FlagSet) error {
	if !fs.Changed("since") {
		return nil
	}
	switch {
	case o.sub != "watch":
		return cli.Usagef("--since applies only to watch")
	case o.since < 0:
		return cli.Usagef("--since %s: want a duration of 0 or more (how far back to replay)", o.since)
	case o.all:
		return cli.Usagef("--since and --all exclude each other: give one")
	}
	return nil
}

// history prints the key's stored statuses, oldest first, one line (or
// JSON object) each, as watch prints them. A key with none prints nothing
// and exits 0: an unknown key and one whose statuses have all aged out look
// the same.
func (c command) history(ctx context.Context, conn *client.Client, o options) error {
	key := o.args[0]
	ctx, cancel := withTimeout(ctx, o.timeout)
	defer cancel()
	sts, err := conn.History(ctx, o.workflow, key)
	if err != nil {
		if errors.Is(err, client.ErrNoHistory) {
			return fmt.Errorf("history of %s: %w", key, client.ErrNoHistory)
		}
		return err
	}
	if len(sts) == 0 && !o.json {
		fmt.Fprintf(c.stderr, "no stored statuses for key %s\n", key)
	}
	for _, st := range sts {
		if o.json {
			if err := json.NewEncoder(c.stdout).Encode(st); err != nil {
				return err
			}
			continue
		}
		c.printStatus(c.stdout, false, st)
	}
	return nil
}
