package main

import (
	"fmt"
	"strings"
)

// printHistoryCost prints the no-op throughput with the status history off
// and on, side by side, and what the history costs.
func printHistoryCost(cfg config, off, on []result) {
	eps := func(rs []result) (float64, string) {
		runs := make([]string, len(rs))
		for i, r := range rs {
			runs[i] = group(r.eps)
		}
		return median(rs, func(r result) float64 { return r.eps }), strings.Join(runs, ", ")
	}
	offEPS, offRuns := eps(off)
	onEPS, onRuns := eps(on)
	fmt.Printf("\nStatus history (no-op, %d events over %d keys, off and on in turns):\n\n", cfg.events, cfg.keys)
	fmt.Println("| no-op | events/s (median) | runs |")
	fmt.Println("| --- | --- | --- |")
	fmt.Printf("| history off (--history-per-key 0) | %s | %s |\n", group(offEPS), offRuns)
	fmt.Printf("| history on (default: 100 per key, 7 days) | %s | %s |\n", group(onEPS), onRuns)
	if offEPS > 0 {
		cost := 100 * (1 - onEPS/offEPS)
		mark := map[bool]string{true: "met   ", false: "MISSED"}[cost < 10]
		fmt.Printf("\n  %s  the history costs under 10 %% of no-op throughput: %.1f %%\n", mark, cost)
	}
}
