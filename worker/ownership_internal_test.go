package worker

import (
	"fmt"
	"slices"
	"testing"
)

// TestAssignSpreadsEvenlyAndMovesLittle: every partition has one owner,
// the spread is within one of even, every worker computes the same split
// whatever the order it lists the members in, and when a member leaves,
// its partitions move and few others do: a modulo split moved most.
func TestAssignSpreadsEvenlyAndMovesLittle(t *testing.T) {
	for _, partitions := range []int{1, 7, 16, 64} {
		for n := 1; n <= 16; n++ {
			var members []string
			for i := range n {
				members = append(members, fmt.Sprintf("orderly-worker-%d", i))
			}
			slices.Sort(members)
			owners := assign(members, partitions)
			load := map[string]int{}
			for p, o := range owners {
				if !slices.Contains(members, o) {
					t.Fatalf("%d members, %d partitions: partition %d owned by %q", n, partitions, p, o)
				}
				load[o]++
			}
			lo, hi := partitions/n, (partitions+n-1)/n
			for _, m := range members {
				if load[m] < lo || load[m] > hi {
					t.Fatalf("%d members, %d partitions: %s holds %d, want %d to %d", n, partitions, m, load[m], lo, hi)
				}
			}
			if n == 1 {
				continue
			}
			moved := 0
			for leaving := range members {
				rest := slices.Delete(slices.Clone(members), leaving, leaving+1)
				after := assign(rest, partitions)
				for p, o := range owners {
					if o != members[leaving] && after[p] != o {
						moved++
					}
				}
			}
			// Averaged over which member leaves: partitions moved between
			// members that stayed.
			if avg := float64(moved) / float64(n); avg > float64(partitions)/8+1 {
				t.Errorf("%d members, %d partitions: a member leaving moves %.1f partitions between the others", n, partitions, avg)
			}
		}
	}
}
