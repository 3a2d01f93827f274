package soak

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/orderly-dev/orderly/contract"
)

// Result is what a run found.
type Result struct {
	Seed      uint64
	Duration  time.Duration
	Args      string // the flags that replay the run
	Faults    []Fault
	Anomalies []Anomaly
	Summary   Summary
	History   *History
	Elapsed   time.Duration // the whole run, set-up and settling included
	Settled   time.Duration // how long everything took to settle once the faults stopped
	// KeyLogs holds, for the key of each kind's first anomaly, the workers'
	// log lines that name it: what CI prints is all there is of a run there.
	KeyLogs map[string][]string
}

// FaultCounts counts the faults injected, by kind, in AllFaults order.
func (r *Result) FaultCounts() string {
	n := map[FaultKind]int{}
	total := 0
	for _, f := range r.Faults {
		if !f.Start.IsZero() {
			n[f.Kind]++
			total++
		}
	}
	var parts []string
	for _, k := range AllFaults() {
		if n[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n[k]))
		}
	}
	if total == 0 {
		return "none"
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

// Print writes the run's report: the figures, the fault schedule, and for
// each kind of anomaly its count and its first instance with the key's
// history, so that the failure can be read and replayed with -seed.
func (r *Result) Print(w io.Writer) {
	s := r.Summary
	verdict := "PASS"
	if len(r.Anomalies) > 0 {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "soak: %s seed %d, %s of load, %s in all (settled %s after the faults)\n", verdict, r.Seed, r.Duration, r.Elapsed.Round(time.Second), r.Settled.Round(100*time.Millisecond))
	fmt.Fprintf(w, "replay: make soak ARGS='%s'\n", r.Args)
	fmt.Fprintf(w, "events: %d sent, %d acknowledged (%d acks said duplicate); %d applied, %d slow work outcomes (%d failed for good) over %d keys\n",
		s.Sent, s.Acked, s.AckedDuplicate, s.Applied, s.Outcomes, s.Failed, s.Keys)
	live := ""
	if r.History != nil && r.History.StatusesLive < s.Statuses {
		live = fmt.Sprintf(", %d of them from the status history alone", s.Statuses-r.History.StatusesLive)
	}
	fmt.Fprintf(w, "statuses: %d received%s (%d duplicate, %d retrying), %d versions without one, each lost to a fault at its commit%s; dead letters: %d\n",
		s.Statuses, live, s.Duplicates, s.Retries, s.GapsExplained, gapsBy(s.GapsBy), s.DeadLetters)
	if r.History != nil && r.History.Acks != nil {
		n := 0
		for _, as := range r.History.Acks {
			n += len(as)
		}
		fmt.Fprintf(w, "acknowledgements of deliveries seen: %d, of %d events\n", n, len(r.History.Acks))
	}
	if r.History != nil {
		for _, m := range r.History.Memory {
			fmt.Fprintf(w, "memory: worker %s at most %.1f MiB resident (limit %.0f MiB)\n", m.Worker, float64(m.Max)/(1<<20), float64(m.Limit)/(1<<20))
		}
	}
	if r.History != nil {
		for _, e := range r.History.Exits {
			if !e.crashed() {
				fmt.Fprintf(w, "restart: %s exited on its own at %s (%s): %s\n", e.Name, e.At.Format("15:04:05.000"), e.Err, lastLine(e.LogTail))
			}
		}
	}
	fmt.Fprintf(w, "faults: %s\n", r.FaultCounts())
	for _, f := range r.Faults {
		fmt.Fprintf(w, "  %s\n", f.String())
	}
	if len(r.Anomalies) == 0 {
		fmt.Fprintln(w, "anomalies: 0")
		return
	}
	byKind := map[string][]Anomaly{}
	for _, a := range r.Anomalies {
		byKind[a.Kind] = append(byKind[a.Kind], a)
	}
	fmt.Fprintf(w, "anomalies: %d\n", len(r.Anomalies))
	for _, k := range AnomalyKinds() {
		as := byKind[k]
		if len(as) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n== %s: %d; the first:\n  %s\n", k, len(as), as[0])
		if as[0].Key != "" && r.History != nil {
			printKey(w, r.History, as[0].Key)
		}
		if lines := r.KeyLogs[as[0].Key]; len(lines) > 0 {
			fmt.Fprintf(w, "    worker log lines naming %s:\n", as[0].Key)
			for _, l := range lines {
				fmt.Fprintf(w, "      %s\n", l)
			}
		}
		const more = 10
		for i, a := range as[1:] {
			if i == more {
				fmt.Fprintf(w, "  ... and %d more\n", len(as)-1-more)
				break
			}
			fmt.Fprintf(w, "  also: %s\n", a)
		}
	}
}

// printKey writes everything the run recorded about key.
func printKey(w io.Writer, h *History, key string) {
	fmt.Fprintf(w, "  history of %s:\n", key)
	fmt.Fprintln(w, "    published (job, kind, producer/seq, attempts, acknowledged):")
	for _, p := range h.Publishes {
		if p.Key != key {
			continue
		}
		ack := "not acknowledged: " + p.LastErr
		if p.Acked {
			ack = fmt.Sprintf("acknowledged %s, stream sequence %d", p.AckedAt.Format("15:04:05.000"), p.Sequence)
			if p.Duplicate {
				ack += " (duplicate)"
			}
		}
		fmt.Fprintf(w, "      %s %s p%d/n%d sent %s, %d attempts, %s\n", p.Job, p.Kind, p.Producer, p.Seq, p.First.Format("15:04:05.000"), p.Attempts, ack)
	}
	if rec, ok := h.States[key]; ok {
		fmt.Fprintf(w, "    state: %s version %d, %d pending, updated %s; log:\n", rec.State, rec.Version, len(rec.Pending), rec.UpdatedAt.Format("15:04:05.000"))
		var d Data
		_ = json.Unmarshal(rec.Data, &d)
		for i, e := range d.Log {
			job := ""
			if e.Job != "" {
				job = " job " + e.Job
			}
			fmt.Fprintf(w, "      v%d %s%s by %s at %s\n", i+1, e.describe(), job, e.Worker, time.UnixMilli(e.At).Format("15:04:05.000"))
		}
	} else {
		fmt.Fprintln(w, "    state: none")
	}
	var sts []contract.Status
	for _, st := range h.Statuses {
		if st.Key == key {
			sts = append(sts, st)
		}
	}
	slices.SortStableFunc(sts, func(a, b contract.Status) int { return a.At.Compare(b.At) })
	fmt.Fprintln(w, "    statuses received:")
	for _, st := range sts {
		e := ""
		if st.Error != nil {
			e = " error " + st.Error.Code + ": " + st.Error.Message
		}
		fmt.Fprintf(w, "      %s v%d %s job %s %s->%s settled=%v%s\n", st.At.Format("15:04:05.000"), st.Version, st.Event, st.JobID, st.From, st.To, st.Settled, e)
	}
	for _, dl := range h.DeadLetters {
		if dl.Key == key {
			fmt.Fprintf(w, "    dead letter: job %s: %s\n", dl.JobID, dl.Reason)
		}
	}
}

// lastLine is the last line of s that is not empty.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func gapsBy(n map[FaultKind]int) string {
	var parts []string
	for _, k := range AllFaults() {
		if n[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n[k]))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
