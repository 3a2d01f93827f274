package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/orderly-dev/orderly/worker"
)

// feature is one setting of the status history and the inventory under
// which the features scenario runs a no-op workflow.
type feature struct {
	name        string // as printed
	wf          string // the workflow name's prefix
	kind        workKind
	history     bool
	inventory   bool
	description string // how it is set, for the table
	results     []result
	cpu         []time.Duration // CPU time of this process per event, by round
}

// features are the settings the features scenario compares for a
// workload: both off, each alone, both on (the defaults). The first is the
// baseline.
func features(kind workKind, prefix string) []*feature {
	return []*feature{
		{name: "both off", wf: prefix + "none", kind: kind, description: "`--history-per-key 0 --inventory=false`"},
		{name: "history only", wf: prefix + "hist", kind: kind, history: true, description: "`--inventory=false`"},
		{name: "inventory only", wf: prefix + "inv", kind: kind, inventory: true, description: "`--history-per-key 0`"},
		{name: "both on", wf: prefix + "both", kind: kind, history: true, inventory: true, description: "the defaults"},
	}
}

// featureLoad is a workload of the features scenario and its settings.
type featureLoad struct {
	title    string
	settings []*feature
}

// featureLoads are the features scenario's workloads: the no-op workflow
// (a self-loop: the inventory writes only a key's first event) and its
// variant whose every event changes its key's state (the inventory writes
// an entry and removes one per event), the two ends of what the inventory
// costs.
func featureLoads() []featureLoad {
	return []featureLoad{
		{"no-op, a self-loop", features(kindNoop, "f")},
		{"no-op, every event a change of state", features(kindToggle, "t")},
	}
}

// runFeatures runs the no-op workflow under each setting, -repeat rounds,
// each round all four settings in turns, in an order that rotates from
// round to round, so that a change in the machine's load (other work on
// it, the store growing) weighs on all alike. Besides the throughput it
// takes the CPU time the worker, the load generator and the server (in
// this process or, with -server process, its own) spent per event while
// the events went through: on a machine shared
// with other work, the throughput swings with the others' load, while the
// work done per event does not much.
func (b *bench) runFeatures(ctx context.Context) ([]featureLoad, error) {
	cfg := b.cfg
	loads := featureLoads()
	var fs []*feature
	for _, l := range loads {
		fs = append(fs, l.settings...)
	}
	for i := range cfg.repeat {
		for k := range fs {
			f := fs[(i+k)%len(fs)]
			run := orderlyRun{kind: f.kind, name: fmt.Sprintf("%s%d", f.wf, i), events: cfg.events, keys: cfg.keys}
			if !f.history {
				run.historyPerKey = worker.NoHistory
			}
			run.noInventory = !f.inventory
			r, err := b.timed(ctx, func(ctx context.Context) (result, error) { return b.orderly(ctx, run) })
			if err != nil {
				return nil, fmt.Errorf("features (%s) round %d: %w", f.name, i+1, err)
			}
			fmt.Printf("  %-7s %-14s round %d/%d: %s\n", map[workKind]string{kindNoop: "noop", kindToggle: "toggle"}[f.kind], f.name, i+1, cfg.repeat, r)
			f.results = append(f.results, r)
			f.cpu = append(f.cpu, r.cpu)
		}
	}
	return loads, nil
}

// printFeatures prints the no-op figures under each setting side by side,
// and what each costs against both off: the median of each round's ratio
// to both off in the same round (whose load was alike), which is steadier
// than the ratio of the medians. The history is held to historyTarget.
func printFeatures(cfg config, loads []featureLoad) {
	for _, l := range loads {
		printFeatureLoad(cfg, l.title, l.settings)
	}
}

func printFeatureLoad(cfg config, title string, fs []*feature) {
	where := "worker, load generator and server"
	mid := func(v []float64) float64 {
		if len(v) == 0 {
			return 0
		}
		v = slices.Clone(v)
		slices.Sort(v)
		return v[len(v)/2]
	}
	base := fs[0]
	fmt.Printf("\nStatus history and inventory (%s: %d events over %d keys, the settings in turns, %d rounds):\n\n", title, cfg.events, cfg.keys, len(base.results))
	fmt.Printf("| no-op with | set by | events/s (median) | runs | CPU µs per event (%s; median) | runs | throughput against both off | CPU per event against both off |\n", where)
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	costs := map[string][2]float64{} // throughput lost, CPU added (%)
	for _, f := range fs {
		eps, runs := make([]float64, len(f.results)), make([]string, len(f.results))
		cpu, cpuRuns := make([]float64, len(f.cpu)), make([]string, len(f.cpu))
		var tput, work []float64 // each round's ratio to both off
		for i, r := range f.results {
			eps[i], runs[i] = r.eps, group(r.eps)
			cpu[i], cpuRuns[i] = float64(f.cpu[i])/1e3, fmt.Sprintf("%.1f", float64(f.cpu[i])/1e3)
			if b := base.results[i]; b.eps > 0 && base.cpu[i] > 0 {
				tput = append(tput, r.eps/b.eps)
				work = append(work, float64(f.cpu[i])/float64(base.cpu[i]))
			}
		}
		against, againstCPU := "–", "–"
		if f != base && len(tput) > 0 {
			c := [2]float64{100 * (1 - mid(tput)), 100 * (mid(work) - 1)}
			costs[f.name] = c
			against, againstCPU = fmt.Sprintf("%+.1f %%", -c[0]), fmt.Sprintf("%+.1f %%", c[1])
		}
		fmt.Printf("| %s | %s | %s | %s | %.1f | %s | %s | %s |\n", f.name, f.description, group(mid(eps)), strings.Join(runs, ", "),
			mid(cpu), strings.Join(cpuRuns, ", "), against, againstCPU)
	}
	if c, ok := costs["history only"]; ok {
		mark := map[bool]string{true: "met   ", false: "MISSED"}[c[0] <= 10]
		fmt.Printf("\n  %s  %s: %.1f %% (CPU per event %+.1f %%)\n", mark, historyTarget, c[0], c[1])
	}
	for _, name := range []string{"inventory only", "both on"} {
		if c, ok := costs[name]; ok {
			fmt.Printf("  %-14s  costs %.1f %% of no-op throughput, CPU per event %+.1f %%\n", name, c[0], c[1])
		}
	}
}
