package soak

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/orderly-dev/orderly/internal/memlimit"
)

// ErrAnomalies is Main's error when the checker found anything.
var ErrAnomalies = errors.New("anomalies found")

// Main is the soak command: `soak [flags]` runs a soak and prints its
// report; `soak worker ...` and `soak nats-server ...` are the processes
// it starts. It returns ErrAnomalies (exit 1) when the checker found
// anything, a *UsageError (exit 2) for bad flags.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case WorkerCommand:
			return RunWorker(ctx, args[1:], getenv, stderr)
		case ServerCommand:
			return RunServer(args[1:], stderr)
		}
	}
	var (
		cfg    Config
		faults string
		quiet  bool
		memory memlimit.Flag
	)
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the fault schedule, the workload and the job ids (0: one drawn at random, printed)")
	fs.DurationVar(&cfg.Duration, "duration", 2*time.Minute, "how long the load and the faults go on")
	fs.IntVar(&cfg.Rate, "rate", 100, "events per second, all producers together")
	fs.IntVar(&cfg.Keys, "keys", 2000, "keys the events go to")
	fs.IntVar(&cfg.Producers, "producers", 4, "producers, each with its own connection")
	fs.StringVar(&faults, "faults", "all", "kinds of fault: all, none, or a comma-separated list of "+fmt.Sprint(AllFaults()))
	fs.DurationVar(&cfg.Settle, "settle", 2*time.Minute, "bound on waiting, after the faults, for every event to be applied and every key settled")
	memory.Bytes = 128 << 20
	fs.Var(&memory, "memory-limit", "each worker's --memory-limit (bytes, or 128MiB)")
	fs.StringVar(&cfg.Dir, "dir", "", "directory of the run's files (default: a temporary one, removed after a clean run)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the run's files after a clean run")
	fs.StringVar(&cfg.NATSServer, "nats-server", "", "nats-server binary of the nodes (default: one on the PATH of go.mod's version, else the one linked into this binary)")
	fs.BoolVar(&quiet, "quiet", false, "print the report only, no progress")
	recheck := fs.String("recheck", "", "check the history a run saved (`FILE`, history.json in its -dir) again, and run nothing")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return &UsageError{err}
	}
	if fs.NArg() > 0 {
		return &UsageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *recheck != "" {
		h, err := LoadHistory(*recheck)
		if err != nil {
			return err
		}
		anomalies, sum := Check(h)
		res := &Result{Seed: h.Seed, Faults: h.Faults, Anomalies: anomalies, Summary: sum, History: h, Args: h.Args}
		res.Print(stdout)
		if len(anomalies) > 0 {
			return fmt.Errorf("%s: %d %w", *recheck, len(anomalies), ErrAnomalies)
		}
		return nil
	}
	kinds, err := ParseFaults(faults)
	if err != nil {
		return &UsageError{err}
	}
	switch {
	case cfg.Duration <= 0:
		return &UsageError{fmt.Errorf("-duration %s: want a positive duration", cfg.Duration)}
	case cfg.Rate <= 0, cfg.Keys <= 0, cfg.Producers <= 0:
		return &UsageError{errors.New("-rate, -keys and -producers: want positive numbers")}
	case cfg.Settle <= 0:
		return &UsageError{fmt.Errorf("-settle %s: want a positive duration", cfg.Settle)}
	}
	cfg.Faults, cfg.MemoryLimit = kinds, memory.Bytes
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64N(1_000_000) + 1
	}
	if !quiet {
		cfg.Log = stderr
	}
	fmt.Fprintf(stderr, "soak: seed %d\n", cfg.Seed)
	res, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	res.Print(stdout)
	if len(res.Anomalies) > 0 {
		return fmt.Errorf("seed %d: %d %w", cfg.Seed, len(res.Anomalies), ErrAnomalies)
	}
	return nil
}

// UsageError is a bad flag: exit 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }
