package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/orderly-dev/orderly/worker"
)

// historyRun is one pair of no-op runs, the status history off and on.
type historyRun struct {
	off, on       result
	offCPU, onCPU time.Duration // CPU time of this process per event
}

// historyCost runs the no-op scenario with the status history off and on,
// in turns, so that a change in the machine's load weighs on both alike.
// Besides the throughput it takes the CPU time this process (the worker,
// the load generator and, unless -server process, the server) spent per
// event: on a machine shared with other work, the throughput swings with
// the others' load, while the work done per event does not much.
func (b *bench) historyCost(ctx context.Context) ([]historyRun, error) {
	cfg := b.cfg
	var runs []historyRun
	for i := range cfg.repeat {
		var h historyRun
		for _, c := range []struct {
			name, wf string
			perKey   int64
			r        *result
			cpu      *time.Duration
		}{{"no history", "histoff", worker.NoHistory, &h.off, &h.offCPU}, {"history", "histon", 0, &h.on, &h.onCPU}} {
			before := cpuTime()
			r, err := b.timed(ctx, func(ctx context.Context) (result, error) {
				return b.orderly(ctx, orderlyRun{kind: kindNoop, name: fmt.Sprintf("%s%d", c.wf, i), events: cfg.events, keys: cfg.keys, historyPerKey: c.perKey})
			})
			if err != nil {
				return nil, fmt.Errorf("history (%s) run %d: %w", c.name, i+1, err)
			}
			*c.r, *c.cpu = r, (cpuTime()-before)/time.Duration(cfg.events)
			fmt.Printf("  %-11s run %d/%d: %s\n", c.name, i+1, cfg.repeat, r)
		}
		runs = append(runs, h)
	}
	return runs, nil
}

// cpuTime is the CPU time, user and system, this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// printHistoryCost prints the no-op figures with the status history off and
// on, side by side, and what the history costs.
func printHistoryCost(cfg config, runs []historyRun) {
	var off, on []result
	var offCPU, onCPU []time.Duration
	for _, h := range runs {
		off, on = append(off, h.off), append(on, h.on)
		offCPU, onCPU = append(offCPU, h.offCPU), append(onCPU, h.onCPU)
	}
	eps := func(rs []result) (float64, string) {
		s := make([]string, len(rs))
		for i, r := range rs {
			s[i] = group(r.eps)
		}
		return median(rs, func(r result) float64 { return r.eps }), strings.Join(s, ", ")
	}
	cpu := func(ds []time.Duration) (time.Duration, string) {
		s := make([]string, len(ds))
		for i, d := range ds {
			s[i] = fmt.Sprintf("%.1f", float64(d)/1e3)
		}
		sorted := slices.Clone(ds)
		slices.Sort(sorted)
		return sorted[len(sorted)/2], strings.Join(s, ", ")
	}
	offEPS, offRuns := eps(off)
	onEPS, onRuns := eps(on)
	offC, offCRuns := cpu(offCPU)
	onC, onCRuns := cpu(onCPU)
	where := "worker, load generator and server in this process"
	if cfg.server == "process" {
		where = "worker and load generator; the server's is not counted"
	}
	fmt.Printf("\nStatus history (no-op, %d events over %d keys, off and on in turns):\n\n", cfg.events, cfg.keys)
	fmt.Printf("| no-op | events/s (median) | runs | CPU µs per event (%s; median) | runs |\n", where)
	fmt.Println("| --- | --- | --- | --- | --- |")
	fmt.Printf("| history off (--history-per-key 0) | %s | %s | %.1f | %s |\n", group(offEPS), offRuns, float64(offC)/1e3, offCRuns)
	fmt.Printf("| history on (default: 100 per key, 7 days) | %s | %s | %.1f | %s |\n", group(onEPS), onRuns, float64(onC)/1e3, onCRuns)
	if offEPS > 0 && offC > 0 {
		// Each round's on against its own off, whose load was alike: the
		// median of those ratios is steadier than the ratio of the medians.
		var tput, cpu []float64
		for _, h := range runs {
			if h.off.eps > 0 && h.offCPU > 0 {
				tput = append(tput, h.on.eps/h.off.eps)
				cpu = append(cpu, float64(h.onCPU)/float64(h.offCPU))
			}
		}
		slices.Sort(tput)
		slices.Sort(cpu)
		fmt.Printf("\n  medians: throughput %.1f %% less with the history, CPU per event %.1f %% more\n",
			100*(1-onEPS/offEPS), 100*(float64(onC)/float64(offC)-1))
		fmt.Printf("  median of each round's on/off: throughput %.1f %% less, CPU per event %.1f %% more (%d rounds)\n",
			100*(1-tput[len(tput)/2]), 100*(cpu[len(cpu)/2]-1), len(tput))
		cost, _ := historyCost(runs)
		mark := map[bool]string{true: "met   ", false: "MISSED"}[cost <= 10]
		fmt.Printf("  %s  %s: %.1f %%\n", mark, historyTarget, cost)
	}
}

// historyTarget is the target historyCost is held to.
const historyTarget = "the history costs at most 10 % of no-op throughput"

// historyCost is the throughput the history costs, in percent: the median
// over the rounds of 1 - on/off, each round's on against its own off, whose
// load was alike. False without a round.
func historyCost(runs []historyRun) (float64, bool) {
	var tput []float64
	for _, h := range runs {
		if h.off.eps > 0 && h.on.eps > 0 {
			tput = append(tput, h.on.eps/h.off.eps)
		}
	}
	if len(tput) == 0 {
		return 0, false
	}
	slices.Sort(tput)
	return 100 * (1 - tput[len(tput)/2]), true
}

// cpuTime is the CPU time of this process and, with -server process, of
// the server's.
func (b *bench) cpuTime() time.Duration { return cpuTime() + b.srv.cpuTime() }

// cpuMark is the CPU time used so far: in all (cpuTime), and by the server
// when it runs in a process of its own.
type cpuMark struct{ total, server time.Duration }

func (b *bench) markCPU() cpuMark {
	s := b.srv.cpuTime()
	return cpuMark{total: cpuTime() + s, server: s}
}

// cpuPerEvent is the CPU time per event of n events since m: in all, and
// the server process's share (0 with the server in this process).
func (b *bench) cpuPerEvent(m cpuMark, n int) (total, server time.Duration) {
	now := b.markCPU()
	return (now.total - m.total) / time.Duration(n), (now.server - m.server) / time.Duration(n)
}
