package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/orderly-dev/orderly/internal/memlimit"
)

// printTable prints the results as a Markdown table (ready for
// BENCHMARKS.md) and the targets of issue 8, met or missed.
func printTable(cfg config, raw, rawState, noop, work, praw, pnoop, pwork []result) {
	rawEPS := median(raw, func(r result) float64 { return r.eps })
	rawP99 := median(praw, func(r result) time.Duration { return r.doneP99 })
	fmt.Printf("Throughput: %d events per run (10 ms work: %d) over %d keys. Latency: paced at %s events/s for %s.\n",
		cfg.events, cfg.workEvents, cfg.keys, group(float64(cfg.rate)), cfg.paced)
	fmt.Println("Raw: done = consumed and acked; Orderly: done = the job's settled status received.")
	fmt.Println()
	fmt.Println("| pipeline | events/s (median) | runs | ratio to raw | enqueue-ack p50 / p99 | enqueue→done p50 / p99 | done p99 vs raw | peak RSS | peak live actors |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	row := func(name string, tput, paced []result) {
		cells := []string{name, "–", "–", "–", "–", "–", "–", "–", "–"}
		if len(tput) > 0 {
			eps := median(tput, func(r result) float64 { return r.eps })
			runs := make([]string, len(tput))
			for i, r := range tput {
				runs[i] = group(r.eps)
			}
			cells[1] = group(eps)
			cells[2] = strings.Join(runs, ", ")
			if rawEPS > 0 {
				cells[3] = fmt.Sprintf("%.0f %%", 100*eps/rawEPS)
			}
		}
		if len(paced) > 0 {
			cells[4] = ms(median(paced, func(r result) time.Duration { return r.ackP50 })) + " / " +
				ms(median(paced, func(r result) time.Duration { return r.ackP99 }))
			p99 := median(paced, func(r result) time.Duration { return r.doneP99 })
			cells[5] = ms(median(paced, func(r result) time.Duration { return r.doneP50 })) + " / " + ms(p99)
			if rawP99 > 0 {
				cells[6] = fmt.Sprintf("×%.1f", float64(p99)/float64(rawP99))
			}
		}
		all := append(append([]result(nil), tput...), paced...)
		if len(all) > 0 {
			cells[7] = mib(maxOf(all, func(r result) uint64 { return r.rss }))
			if srv := maxOf(all, func(r result) uint64 { return r.serverRSS }); srv > 0 {
				cells[7] += " (server " + mib(srv) + ")"
			}
			if a := maxOf(all, func(r result) int { return r.actors }); a > 0 {
				cells[8] = group(float64(a))
			}
		}
		fmt.Println("| " + strings.Join(cells, " | ") + " |")
	}
	row("raw JetStream", raw, praw)
	row("raw JetStream + state write + status", rawState, nil)
	row("Orderly, no-op", noop, pnoop)
	row(fmt.Sprintf("Orderly, %s work", cfg.work), work, pwork)
	if len(rawState) > 0 && len(noop) > 0 {
		fmt.Printf("\nOrderly no-op against the same broker work done raw (raw + state write + status): %.0f %%.\n",
			100*median(noop, func(r result) float64 { return r.eps })/median(rawState, func(r result) float64 { return r.eps }))
	}
	if len(pnoop)+len(pwork)+len(praw) > 0 {
		fmt.Printf("\nPaced rate achieved (median): raw %s, no-op %s, work %s events/s.\n",
			group(median(praw, func(r result) float64 { return r.rate })),
			group(median(pnoop, func(r result) float64 { return r.rate })),
			group(median(pwork, func(r result) float64 { return r.rate })))
	}
	if len(work) > 0 {
		conc := cfg.concurrency
		if conc <= 0 {
			conc = 64
		}
		fmt.Printf("The %s-work figure is bounded by Concurrency/work = %d/%s = %s events/s.\n",
			cfg.work, conc, cfg.work, group(float64(conc)/cfg.work.Seconds()))
	}

	fmt.Println("\nTargets (issue 8):")
	check := func(ok bool, s string, args ...any) {
		mark := "MISSED"
		if ok {
			mark = "met   "
		}
		fmt.Printf("  %s  %s\n", mark, fmt.Sprintf(s, args...))
	}
	if len(noop) > 0 && rawEPS > 0 {
		ratio := median(noop, func(r result) float64 { return r.eps }) / rawEPS
		check(ratio >= 0.5, "no-op throughput ≥ 50 %% of raw JetStream: %.0f %%", 100*ratio)
		check(ratio >= 0.7, "(stretch) no-op throughput ≥ 70 %% of raw JetStream: %.0f %%", 100*ratio)
	}
	if len(pnoop) > 0 {
		p99 := median(pnoop, func(r result) time.Duration { return r.doneP99 })
		check(p99 <= 10*time.Millisecond, "enqueue→settled p99 ≤ 10 ms at %s events/s: %s", group(float64(cfg.rate)), ms(p99))
		ack := median(pnoop, func(r result) time.Duration { return r.ackP99 })
		check(ack <= time.Millisecond, "enqueue-ack p99 ≤ 1 ms at %s events/s: %s", group(float64(cfg.rate)), ms(ack))
	}
}

// printPending prints the pending scenario's figures and its target.
func printPending(cfg config, r result) {
	conc := cfg.concurrency
	if conc <= 0 {
		conc = 64
	}
	limit := cfg.memoryLimit
	if limit == "" || limit == "0" {
		limit = "none"
	}
	fmt.Printf("\nPending work (%s distinct keys, one event each starting a %s action; memory limit %s, Concurrency %d):\n",
		group(float64(cfg.pendingKeys)), cfg.pendingWork, limit, conc)
	whose := "server, worker and load generator in one process"
	if cfg.server == "process" {
		whose = fmt.Sprintf("worker and load generator; the server process's own: %s", mib(r.serverRSS))
	}
	fmt.Printf("  every key settled in %s (%s keys/s; Concurrency/work allows %s/s)\n",
		r.elapsed.Round(100*time.Millisecond), group(r.eps), group(float64(conc)/cfg.pendingWork.Seconds()))
	fmt.Printf("  peak RSS %s (%s); peak Go heap %s (found live by a collection: %s); peak goroutines %d (stacks %s); peak live actors %s\n",
		mib(r.rss), whose, mib(r.heap), mib(r.live), r.goroutines, mib(r.stacks), group(float64(r.actors)))
	bound, what := uint64(512<<20), "512 MiB (no limit given)"
	if n, err := memlimit.Parse(cfg.memoryLimit); err == nil && n > 0 {
		bound, what = uint64(n), "the memory limit, "+mib(uint64(n))
	}
	mark := map[bool]string{true: "met   ", false: "MISSED"}[r.rss < bound]
	fmt.Printf("  %s  %s keys with %s work, worker RSS under %s: %s\n", mark, group(float64(cfg.pendingKeys)), cfg.pendingWork, what, mib(r.rss))
}
