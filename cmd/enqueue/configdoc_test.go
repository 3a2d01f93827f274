package main

import (
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/orderly-dev/orderly/internal/cli"
	"github.com/orderly-dev/orderly/internal/gendoc"
)

var update = flag.Bool("update", false, "rewrite the generated parts of docs/configuration.md")

// TestConfigurationDocIsCurrent: docs/configuration.md shows enqueue's
// usage and lists every flag, with the environment variables of those read
// from the environment, exactly as the flag sets have them. After changing
// a flag, run go test ./cmd/enqueue -run TestConfigurationDoc -update.
func TestConfigurationDocIsCurrent(t *testing.T) {
	t.Parallel()
	var o options
	fs, env, _ := o.flagSets()
	envNames := func(fl *pflag.Flag) []string {
		if env.Lookup(fl.Name) == nil {
			return nil
		}
		return cli.EnvNames(fl)
	}
	head := strings.TrimPrefix(strings.TrimSuffix(usageHead, "Flags:\n"), "Usage:\n")
	for _, s := range []struct{ name, want string }{
		{"enqueue-usage", gendoc.Fenced("text", strings.TrimRight(head, "\n"))},
		{"enqueue-flags", gendoc.FlagTable(fs, envNames)},
	} {
		err := gendoc.Section("../../docs/configuration.md", s.name, s.want, *update)
		if errors.Is(err, gendoc.ErrStale) {
			t.Errorf("%v\n\nrun: go test ./cmd/enqueue -run TestConfigurationDoc -update", err)
		} else if err != nil {
			t.Error(err)
		}
	}
}
