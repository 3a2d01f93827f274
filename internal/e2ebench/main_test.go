package main

import (
	"context"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/orderly-dev/orderly/internal/natstest"
)

// TestMain fails the package's tests if any leaves a goroutine behind. Run
// as a producer process (produceEnv set), the test binary is the producer,
// as the benchmark's own binary is.
func TestMain(m *testing.M) {
	if spec := os.Getenv(produceEnv); spec != "" {
		if err := produce(context.Background(), spec); err != nil {
			fmt.Fprintln(os.Stderr, "e2ebench producer:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m, natstest.LeakOptions()...)
}
