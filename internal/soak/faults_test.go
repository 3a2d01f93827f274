package soak

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

// TestPlanFromSeed: the schedule is the seed's: the same seed gives the
// same faults, another seed others; each lane's faults come one after
// another, all start within the run, and every kind asked for comes up in
// a run of a minute.
func TestPlanFromSeed(t *testing.T) {
	t.Parallel()
	a := Plan(42, time.Minute, AllFaults(), 3, 3)
	if b := Plan(42, time.Minute, AllFaults(), 3, 3); !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 42 gave two schedules:\n%v\n%v", a, b)
	}
	if b := Plan(43, time.Minute, AllFaults(), 3, 3); reflect.DeepEqual(a, b) {
		t.Fatal("seeds 42 and 43 gave the same schedule")
	}
	if len(a) != len(lanes) {
		t.Fatalf("%d lanes, want %d", len(a), len(lanes))
	}
	seen := map[FaultKind]bool{}
	for _, lane := range a {
		for i, f := range lane {
			seen[f.Kind] = true
			if f.At >= time.Minute || f.Hold <= 0 && f.Kind != ProxyCut {
				t.Errorf("%s: outside the run, or no hold", f.plan())
			}
			if i > 0 && f.At < lane[i-1].At+lane[i-1].Hold {
				t.Errorf("%s starts before %s is over", f.plan(), lane[i-1].plan())
			}
			switch f.Kind {
			case NodeKill, DiskFull, WorkerKill, WorkerTerm, ProxyCut, ProxyStall, ProxyDelay, ProxyDrop:
				if f.Target < 0 || f.Target >= 3 {
					t.Errorf("%s: target %d", f.plan(), f.Target)
				}
			}
		}
	}
	for _, k := range AllFaults() {
		if !seen[k] {
			t.Errorf("no %s in a minute", k)
		}
	}
	only := Plan(42, time.Minute, []FaultKind{ProxyStall}, 3, 3)
	if len(only) != 1 {
		t.Fatalf("-faults proxy-stall: %d lanes, want 1", len(only))
	}
	for _, f := range only[0] {
		if f.Kind != ProxyStall {
			t.Errorf("-faults proxy-stall planned %s", f.Kind)
		}
	}
	if none := Plan(42, time.Minute, nil, 3, 3); len(none) != 0 {
		t.Errorf("-faults none planned %v", none)
	}
}

func TestParseFaults(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want []FaultKind
		err  bool
	}{
		{"all", AllFaults(), false},
		{"none", nil, false},
		{"node-kill, proxy-cut,node-kill", []FaultKind{NodeKill, ProxyCut}, false},
		{"node-kil", nil, true},
	} {
		got, err := ParseFaults(c.in)
		if (err != nil) != c.err || !slices.Equal(got, c.want) {
			t.Errorf("ParseFaults(%q) = %v, %v; want %v, error %v", c.in, got, err, c.want, c.err)
		}
	}
}
