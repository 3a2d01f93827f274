// Command soak is Orderly's seeded fault-injection soak (make soak): a
// three-node NATS cluster and three workers, real processes built from
// this tree, a fault proxy between each worker and its node, producers
// sending a known workload, faults from a schedule drawn from -seed, and
// a checker that holds the recorded history to Orderly's guarantees. See
// package internal/soak.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/soak"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// nats-server handles its own signals.
	if len(os.Args) > 1 && os.Args[1] == soak.ServerCommand {
		stop()
		ctx = context.Background()
	}
	err := soak.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "soak:", err)
	var usage *soak.UsageError
	var cliUsage *cli.UsageError
	if errors.As(err, &usage) || errors.As(err, &cliUsage) {
		os.Exit(2)
	}
	os.Exit(1)
}
