package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/orderly-dev/orderly/internal/memlimit"
)

// tables is what printTable prints: each scenario's runs.
type tables struct {
	raw, rawState, noop, noopIDs, ord, work, asynq []result
	// asynqNote says why the asynq scenario was skipped.
	asynqNote          string
	praw, pnoop, pwork []result
	hist               []historyRun
}

// printTable prints the results as a Markdown table (ready for
// BENCHMARKS.md) and the targets of issue 18, met or missed.
func printTable(cfg config, t tables) {
	eps := func(rs []result) float64 { return median(rs, func(r result) float64 { return r.eps }) }
	rawEPS := eps(t.raw)
	rawP99 := median(t.praw, func(r result) time.Duration { return r.doneP99 })
	producer := "in a process of its own"
	if cfg.producer == "inproc" {
		producer = "in the benchmark's process"
	}
	fmt.Printf("Throughput: %d events per run (order: %d distinct keys; 10 ms work: %d) over %d keys. Latency: paced at %s events/s for %s, the producer %s.\n",
		cfg.events, cfg.orderKeys, cfg.workEvents, cfg.keys, group(float64(cfg.rate)), cfg.paced, producer)
	fmt.Println("Raw: done = consumed and acked; Orderly: done = the job's settled status received; Asynq: done = handled and removed from Redis.")
	fmt.Println()
	fmt.Println("| pipeline | events/s (median) | runs | ratio to raw | CPU µs per event | enqueue-ack p50 / p99 | enqueue→done p50 / p99 | done p99 vs raw | peak RSS | peak live actors |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	row := func(name, serverName string, tput, paced []result) {
		cells := []string{name, "–", "–", "–", "–", "–", "–", "–", "–", "–"}
		if len(tput) > 0 {
			runs := make([]string, len(tput))
			for i, r := range tput {
				runs[i] = group(r.eps)
			}
			cells[1] = group(eps(tput))
			cells[2] = strings.Join(runs, ", ")
			if rawEPS > 0 {
				cells[3] = fmt.Sprintf("%.0f %%", 100*eps(tput)/rawEPS)
			}
			if cpu := median(tput, func(r result) time.Duration { return r.cpu }); cpu > 0 {
				cells[4] = fmt.Sprintf("%.1f", float64(cpu)/1e3)
			}
		}
		if len(paced) > 0 {
			cells[5] = ms(median(paced, func(r result) time.Duration { return r.ackP50 })) + " / " +
				ms(median(paced, func(r result) time.Duration { return r.ackP99 }))
			p99 := median(paced, func(r result) time.Duration { return r.doneP99 })
			cells[6] = ms(median(paced, func(r result) time.Duration { return r.doneP50 })) + " / " + ms(p99)
			if rawP99 > 0 {
				cells[7] = fmt.Sprintf("×%.1f", float64(p99)/float64(rawP99))
			}
		}
		all := append(append([]result(nil), tput...), paced...)
		if len(all) > 0 {
			cells[8] = mib(maxOf(all, func(r result) uint64 { return r.rss }))
			if srv := maxOf(all, func(r result) uint64 { return r.serverRSS }); srv > 0 {
				cells[8] += " (" + serverName + " " + mib(srv) + ")"
			}
			if a := maxOf(all, func(r result) int { return r.actors }); a > 0 {
				cells[9] = group(float64(a))
			}
		}
		fmt.Println("| " + strings.Join(cells, " | ") + " |")
	}
	row("raw JetStream", "server", t.raw, t.praw)
	row("raw JetStream + state write + status", "server", t.rawState, nil)
	row("Orderly, no-op", "server", t.noop, t.pnoop)
	if len(t.noopIDs) > 0 {
		row("Orderly, no-op, job ids given (looked up, claimed)", "server", t.noopIDs, nil)
	}
	if len(t.ord) > 0 {
		row(fmt.Sprintf("Orderly, order (%s new keys, start_processing, 0 s gateway)", group(float64(cfg.orderKeys))), "server", t.ord, nil)
	}
	row(fmt.Sprintf("Orderly, %s work", cfg.work), "server", t.work, t.pwork)
	if len(t.asynq) > 0 {
		row("Asynq v0.26, no-op (redis-server, AOF everysec)", "redis-server", t.asynq, nil)
	}
	if t.asynqNote != "" {
		fmt.Printf("\n(%s)\n", t.asynqNote)
	}
	if len(t.rawState) > 0 && len(t.noop) > 0 {
		fmt.Printf("\nOrderly no-op against the same broker work done raw (raw + state write + status): %.0f %%.\n",
			100*eps(t.noop)/eps(t.rawState))
	}
	if len(t.asynq) > 0 {
		fmt.Printf("\n| against Asynq, same run | ratio |\n| --- | --- |\n")
		if len(t.noop) > 0 {
			fmt.Printf("| Orderly no-op ÷ Asynq no-op | %.2f |\n", eps(t.noop)/eps(t.asynq))
		}
		if len(t.ord) > 0 {
			fmt.Printf("| Orderly order ÷ Asynq no-op | %.2f |\n", eps(t.ord)/eps(t.asynq))
		}
		if rawEPS > 0 {
			fmt.Printf("| Asynq no-op ÷ raw JetStream | %.2f |\n", eps(t.asynq)/rawEPS)
		}
	}
	if len(t.pnoop)+len(t.pwork)+len(t.praw) > 0 {
		fmt.Printf("\nPaced rate achieved (median): raw %s, no-op %s, work %s events/s.\n",
			group(median(t.praw, func(r result) float64 { return r.rate })),
			group(median(t.pnoop, func(r result) float64 { return r.rate })),
			group(median(t.pwork, func(r result) float64 { return r.rate })))
	}
	if len(t.work) > 0 {
		conc := cfg.concurrency
		if conc <= 0 {
			conc = 64
		}
		fmt.Printf("The %s-work figure is bounded by Concurrency/work = %d/%s = %s events/s.\n",
			cfg.work, conc, cfg.work, group(float64(conc)/cfg.work.Seconds()))
	}

	fmt.Println("\nTargets (issue 18):")
	fmt.Println()
	fmt.Println("| target | measured | |")
	fmt.Println("| --- | --- | --- |")
	check := func(ok bool, target, measured string) {
		mark := "**missed**"
		if ok {
			mark = "met"
		}
		fmt.Printf("| %s | %s | %s |\n", target, measured, mark)
	}
	if len(t.noop) > 0 && rawEPS > 0 {
		ratio := eps(t.noop) / rawEPS
		check(ratio >= 0.5, "no-op ≥ 0.50 of raw JetStream", fmt.Sprintf("%.2f", ratio))
		check(ratio >= 0.7, "(stretch) no-op ≥ 0.70 of raw JetStream", fmt.Sprintf("%.2f", ratio))
	}
	if len(t.ord) > 0 && rawEPS > 0 {
		ratio := eps(t.ord) / rawEPS
		check(ratio >= 0.25, "order ≥ 0.25 of raw JetStream", fmt.Sprintf("%.2f", ratio))
	}
	if len(t.noop) > 0 && len(t.asynq) > 0 {
		ratio := eps(t.noop) / eps(t.asynq)
		check(ratio >= 3, "no-op ÷ Asynq ≥ 3", fmt.Sprintf("%.2f", ratio))
	}
	if len(t.pnoop) > 0 {
		p99 := median(t.pnoop, func(r result) time.Duration { return r.doneP99 })
		check(p99 <= 10*time.Millisecond, fmt.Sprintf("no-op enqueue→settled p99 ≤ 10 ms at %s events/s", group(float64(cfg.rate))), ms(p99))
		ack := median(t.pnoop, func(r result) time.Duration { return r.ackP99 })
		check(ack <= time.Millisecond, fmt.Sprintf("no-op enqueue-ack p99 ≤ 1 ms at %s events/s (producer %s)", group(float64(cfg.rate)), producer),
			fmt.Sprintf("%s (raw JetStream: %s)", ms(ack), ms(median(t.praw, func(r result) time.Duration { return r.ackP99 }))))
	}
	if cost, ok := historyCost(t.hist); ok {
		check(cost <= 10, historyTarget, fmt.Sprintf("%.1f %% (median of %d rounds' on/off)", cost, len(t.hist)))
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
