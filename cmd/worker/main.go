// Command worker runs Orderly's reference order workflow. With no --nats-url
// it starts an embedded NATS server with JetStream on disk, so this one
// command runs the whole system on a laptop.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	// The IANA time zones of schedules (--tz), also where the system has
	// none: the embedded server and enqueue read them the same way.
	_ "time/tzdata"

	"github.com/orderly-dev/orderly/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		var usage *cli.UsageError
		if errors.As(err, &usage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
