package main

import (
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/gendoc"
)

var update = flag.Bool("update", false, "rewrite the generated parts of docs/configuration.md")

// configDoc is the configuration reference; its worker-* sections are
// generated from the worker's flag set.
const configDoc = "../../docs/configuration.md"

// TestConfigurationDocIsCurrent: docs/configuration.md lists every flag of
// the worker, with its environment variables, default and usage, exactly
// as the flag set has them. After changing a flag, run
// go test ./cmd/worker -run TestConfigurationDoc -update.
func TestConfigurationDocIsCurrent(t *testing.T) {
	t.Parallel()
	var o options
	fs := flags("worker", &o)
	synopsis, _, _ := strings.Cut(usage, "\n\n")
	for _, s := range []struct{ name, want string }{
		{"worker-usage", gendoc.Fenced("text", synopsis)},
		{"worker-flags", gendoc.FlagTable(fs, cli.EnvNames)},
	} {
		err := gendoc.Section(configDoc, s.name, s.want, *update)
		if errors.Is(err, gendoc.ErrStale) {
			t.Errorf("%v\n\nrun: go test ./cmd/worker -run TestConfigurationDoc -update", err)
		} else if err != nil {
			t.Error(err)
		}
	}
}
