package soak

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/orderly-dev/orderly/contract"
)

// History is everything a run recorded, what the checker reads.
type History struct {
	// Seed and Args are the run's (Args: the flags that replay it).
	Seed uint64
	Args string
	// Workers are the worker ids, by index (the Target of a worker fault).
	Workers []string
	// Publishes are every event the producers sent or tried to.
	Publishes []Publish
	// Statuses are every status the watchers received, each once.
	Statuses []contract.Status
	// States are the state bucket's records once the run settled, by key.
	States map[string]contract.StateRecord
	// DeadLetters are the dead-letter stream's messages then.
	DeadLetters []DeadLetter
	// Faults are the faults injected.
	Faults []Fault
	// Links are the connections of each worker's proxy to the nodes, by
	// worker id: which node a worker was connected to when one stopped.
	Links map[string][]Link
	// Memory is the most memory each worker was seen to use.
	Memory []MemorySample
	// Exits are the exits of processes the soak did not ask for.
	Exits []Exit
	// Errors are what went wrong that no other field says: a producer's
	// refused job id, a worker that did not stop on SIGTERM.
	Errors []string
	// StatusesDropped counts statuses the watchers' connections dropped.
	StatusesDropped int64
	// StatusesLive counts the Statuses the watchers received; the others
	// came from the status history alone.
	StatusesLive int
	// Acks are the acknowledgements of the events stream's messages the
	// soak saw go by, by stream sequence.
	Acks map[uint64][]Ack
}

// DeadLetter is a dead letter as the checker needs it.
type DeadLetter struct {
	Key, JobID, Reason string
}

// Exit is a process that ended on its own.
type Exit struct {
	Name    string
	Worker  bool // a worker, not a node
	Err     string
	At      time.Time
	LogTail string
}

// crashed reports whether the exit is a crash: a node that stopped, or a
// worker that panicked or died of a fatal error. A worker that gave up on
// its own (start-up failed on a slow cluster) exits 1 to be restarted, as
// it is documented to: the run restarts it, and the report lists it.
func (e Exit) crashed() bool {
	if !e.Worker {
		return true
	}
	for _, s := range []string{"panic:", "fatal error:", "DATA RACE", "signal: "} {
		if strings.Contains(e.LogTail, s) || strings.Contains(e.Err, s) {
			return true
		}
	}
	return false
}

// Kinds of anomaly the checker reports.
const (
	// An acknowledged event is not in its key's log.
	AnomalyLost = "lost"
	// An event is in its key's log more than once.
	AnomalyDoubled = "doubled"
	// The log holds an event nobody sent (to that key, of that kind).
	AnomalyPhantom = "phantom"
	// A producer's events of a key are in the log out of publish order.
	AnomalyReordered = "reordered"
	// The log does not make sense: its length is not the version, an
	// outcome without its work, a client event applied while work was
	// pending, a state that does not follow from the log.
	AnomalyLogInvalid = "log_invalid"
	// The key still has slow work pending, or is busy, once the run settled.
	AnomalyUnsettled = "unsettled"
	// A committed version was announced by no status received, with no
	// fault to explain the loss.
	AnomalyStatusGap = "status_gap"
	// Two statuses announce the same version.
	AnomalyStatusRepeat = "status_repeat"
	// A status says another event, job or state than the log has at its
	// version.
	AnomalyStatusMismatch = "status_mismatch"
	// A status announces a version the state does not have: a change
	// published and then lost.
	AnomalyStatusAhead = "status_ahead"
	// A valid event was refused (a status with an error a valid event of
	// the checking workflow must never get).
	AnomalyRejected = "rejected"
	// A dead letter that is not one of the poison events sent, has no
	// reason, or not the reason expected.
	AnomalyDeadLetter = "dead_letter"
	// An acknowledged poison event is not among the dead letters.
	AnomalyDeadLetterMissing = "dead_letter_missing"
	// A worker used more memory than its --memory-limit.
	AnomalyMemory = "memory"
	// A process exited on its own.
	AnomalyCrash = "crash"
	// Anything else the run saw go wrong (History.Errors).
	AnomalyError = "error"
)

// AnomalyKinds lists every kind, in the order reports give them.
func AnomalyKinds() []string {
	return []string{
		AnomalyLost, AnomalyDoubled, AnomalyPhantom, AnomalyReordered, AnomalyLogInvalid,
		AnomalyUnsettled, AnomalyStatusGap, AnomalyStatusRepeat, AnomalyStatusMismatch,
		AnomalyStatusAhead, AnomalyRejected, AnomalyDeadLetter, AnomalyDeadLetterMissing,
		AnomalyMemory, AnomalyCrash, AnomalyError,
	}
}

// Anomaly is one thing the checker found wrong.
type Anomaly struct {
	Kind   string
	Key    string // the key it concerns, if any
	Detail string
}

func (a Anomaly) String() string {
	if a.Key != "" {
		return fmt.Sprintf("%s: key %s: %s", a.Kind, a.Key, a.Detail)
	}
	return fmt.Sprintf("%s: %s", a.Kind, a.Detail)
}

// Summary counts what the checker looked at.
type Summary struct {
	Keys          int // keys with an event sent or a state
	Sent          int // events sent (first attempts)
	Acked         int // of which acknowledged
	Applied       int // log entries of client events
	Outcomes      int // log entries of slow work outcomes (done, failed)
	Failed        int // of which failed for good
	Statuses      int // statuses received
	GapsExplained int // versions with no status, each lost to a fault of its worker or node near its commit
	// GapsBy counts GapsExplained by the kind of fault that explains them.
	GapsBy         map[FaultKind]int
	DeadLetters    int
	Duplicates     int // statuses with code duplicate
	Retries        int // statuses with code retrying
	AckedDuplicate int // acknowledgements that said duplicate (a producer's retry of a stored event)
}

// changed reports whether st announces a committed change (a new version):
// an event applied, or slow work's failure fed back and applied.
func changed(st *contract.Status) bool {
	return st.Error == nil || st.Error.Code == contract.CodeActionFailed
}

// Check holds the history to Orderly's guarantees and returns every
// anomaly found (none: the run was clean) and a summary.
func Check(h *History) ([]Anomaly, Summary) {
	var out []Anomaly
	var sum Summary
	report := func(kind, key, format string, a ...any) {
		out = append(out, Anomaly{Kind: kind, Key: key, Detail: fmt.Sprintf(format, a...)})
	}
	type pk struct {
		key    string
		p, seq int
	}
	byEvent := map[pk]*Publish{}
	byJob := map[string]*Publish{}
	byKey := map[string][]*Publish{}
	for i := range h.Publishes {
		p := &h.Publishes[i]
		sum.Sent++
		if p.Acked {
			sum.Acked++
		}
		if p.Duplicate {
			sum.AckedDuplicate++
		}
		byJob[p.Job] = p
		byKey[p.Key] = append(byKey[p.Key], p)
		if p.valid() {
			byEvent[pk{p.Key, p.Producer, p.Seq}] = p
		}
	}
	statuses := map[string][]contract.Status{}
	for _, st := range h.Statuses {
		statuses[st.Key] = append(statuses[st.Key], st)
	}
	sum.Statuses = len(h.Statuses)
	keys := map[string]bool{}
	for k := range byKey {
		keys[k] = true
	}
	for k := range h.States {
		keys[k] = true
	}
	for k := range statuses {
		keys[k] = true
	}
	sorted := slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	})
	sum.Keys = len(sorted)
	workerIndex := map[string]int{}
	for i, w := range h.Workers {
		workerIndex[w] = i
	}
	explained := func(e Entry, movedOn bool) bool {
		if h.StatusesDropped > 0 {
			return true // the watchers lost some: no gap can be held against the worker
		}
		w, ok := workerIndex[e.Worker]
		if !ok {
			return false
		}
		at := time.UnixMilli(e.At)
		// A commit the worker's link held up (a stall or a delay that began
		// while it was on its way) went out when the link came back: a kill
		// or a cut then lost its status as surely as one just after it.
		when := []time.Time{at}
		for i := range h.Faults {
			f := &h.Faults[i]
			if (f.Kind == ProxyStall || f.Kind == ProxyDelay) && f.Target == w && !f.Start.IsZero() &&
				!f.Start.Before(at.Add(-lostBefore)) && !f.Start.After(at.Add(lostAfter)) {
				when = append(when, f.End)
			}
		}
		for _, t := range when {
			for i := range h.Faults {
				if f := &h.Faults[i]; f.explains(w, h.Links[e.Worker], t, movedOn) {
					if sum.GapsBy == nil {
						sum.GapsBy = map[FaultKind]int{}
					}
					sum.GapsBy[f.Kind]++
					return true
				}
			}
		}
		return false
	}

	for _, key := range sorted {
		rec, hasState := h.States[key]
		var log []Entry
		if hasState {
			var d Data
			if err := json.Unmarshal(rec.Data, &d); err != nil {
				report(AnomalyLogInvalid, key, "data is not the checking workflow's: %v", err)
				continue
			}
			log = d.Log
		}

		// The log on its own.
		if hasState && uint64(len(log)) != rec.Version {
			report(AnomalyLogInvalid, key, "version %d, but %d log entries", rec.Version, len(log))
		}
		// after[i] is the state after log entry i; jobOf[i] the job whose
		// event entry i is (for an outcome, the job that started the work).
		after := make([]string, len(log))
		jobOf := make([]string, len(log))
		open := -1 // the work entry whose outcome is awaited
		count := map[pk]int{}
		last := map[int]int{} // the latest sequence number seen, per producer
		for i, e := range log {
			switch e.Kind {
			case EntryAdd, EntryWork:
				sum.Applied++
				if open >= 0 {
					report(AnomalyLogInvalid, key, "version %d: %s applied while the work of version %d was pending", i+1, e.describe(), open+1)
				}
				id := pk{key, e.Producer, e.Seq}
				count[id]++
				p := byEvent[id]
				switch {
				case p == nil:
					report(AnomalyPhantom, key, "version %d: %s, which no producer sent to this key", i+1, e.describe())
				case (p.Kind == KindWork) != (e.Kind == EntryWork):
					report(AnomalyPhantom, key, "version %d: %s, but the producer sent it as %s (job %s)", i+1, e.describe(), p.Kind, p.Job)
				default:
					jobOf[i] = p.Job
				}
				if count[id] == 2 {
					report(AnomalyDoubled, key, "%s applied more than once (versions %s)", e.describe(), versionsOf(log, e))
				}
				if l, ok := last[e.Producer]; ok && e.Seq < l {
					report(AnomalyReordered, key, "version %d: %s applied after sequence %d of the same producer", i+1, e.describe(), l)
				}
				last[e.Producer] = max(last[e.Producer], e.Seq)
				after[i] = string(Ready)
				if e.Kind == EntryWork {
					after[i] = string(Busy)
					open = i
				}
			case EntryDone, EntryFailed:
				sum.Outcomes++
				if e.Kind == EntryFailed {
					sum.Failed++
				}
				after[i] = string(Ready)
				if open < 0 {
					report(AnomalyLogInvalid, key, "version %d: outcome %s with no work pending", i+1, e.describe())
					continue
				}
				jobOf[i] = jobOf[open]
				if e.Kind == EntryDone && e.Job != "" && jobOf[open] != "" && e.Job != jobOf[open] {
					report(AnomalyLogInvalid, key, "version %d: outcome of job %s, but the work pending was job %s's", i+1, e.Job, jobOf[open])
				}
				open = -1
			default:
				report(AnomalyLogInvalid, key, "version %d: unknown entry kind %q", i+1, e.Kind)
			}
		}
		if hasState {
			want := string(Ready)
			if open >= 0 {
				want = string(Busy)
			}
			if rec.State != want {
				report(AnomalyLogInvalid, key, "state %s, but the log leaves it %s", rec.State, want)
			}
			if rec.State != string(Ready) || len(rec.Pending) > 0 {
				report(AnomalyUnsettled, key, "state %s with %d pending work once the run settled", rec.State, len(rec.Pending))
			}
		}

		// The log against the publishes.
		for _, p := range byKey[key] {
			if !p.valid() {
				continue
			}
			n := count[pk{key, p.Producer, p.Seq}]
			if p.Acked && n == 0 {
				report(AnomalyLost, key, "job %s (%s p%d n%d) acknowledged at %s as stream sequence %d (%d attempts), not in the log%s",
					p.Job, p.Kind, p.Producer, p.Seq, p.AckedAt.Format("15:04:05.000"), p.Sequence, p.Attempts, handledBy(h.States, p.Sequence)+acksOf(h.Acks, p.Sequence))
			}
		}

		// The statuses against the log.
		sts := statuses[key]
		slices.SortStableFunc(sts, func(a, b contract.Status) int {
			return cmp.Or(cmp.Compare(a.Version, b.Version), a.At.Compare(b.At))
		})
		announced := map[uint64]*contract.Status{}
		for i := range sts {
			st := &sts[i]
			if st.Version > uint64(len(log)) {
				report(AnomalyStatusAhead, key, "status of version %d (%s, job %s), but the state is at version %d", st.Version, st.Event, st.JobID, len(log))
				continue
			}
			if !changed(st) {
				switch code := st.Error.Code; code {
				case contract.CodeDuplicate:
					sum.Duplicates++
				case contract.CodeRetrying:
					sum.Retries++
				case contract.CodeMalformed, contract.CodeUnknownEvent:
					p := byJob[st.JobID]
					if p == nil || p.Key != key || !(p.Kind == KindMalformed && code == contract.CodeMalformed || p.Kind == KindUnknown && code == contract.CodeUnknownEvent) {
						report(AnomalyRejected, key, "job %s refused with %s: %s", st.JobID, code, st.Error.Message)
					}
				default:
					report(AnomalyRejected, key, "job %s (%s) refused at version %d with %s: %s", st.JobID, st.Event, st.Version, code, st.Error.Message)
				}
				continue
			}
			if st.Version == 0 {
				report(AnomalyStatusMismatch, key, "a change announced at version 0 (%s, job %s)", st.Event, st.JobID)
				continue
			}
			if prev := announced[st.Version]; prev != nil {
				report(AnomalyStatusRepeat, key, "version %d announced twice: %s job %s at %s, and %s job %s at %s",
					st.Version, prev.Event, prev.JobID, prev.At.Format("15:04:05.000"), st.Event, st.JobID, st.At.Format("15:04:05.000"))
				continue
			}
			announced[st.Version] = st
			e := log[st.Version-1]
			if st.Event != e.event() || jobOf[st.Version-1] != "" && st.JobID != jobOf[st.Version-1] || st.To != after[st.Version-1] {
				report(AnomalyStatusMismatch, key, "version %d: status says %s job %s to %s, the log %s job %s to %s",
					st.Version, st.Event, st.JobID, st.To, e.event(), jobOf[st.Version-1], after[st.Version-1])
			}
		}
		for v := uint64(1); v <= uint64(len(log)); v++ {
			if announced[v] != nil {
				continue
			}
			e := log[v-1]
			movedOn := v < uint64(len(log)) && log[v].Worker != e.Worker
			if explained(e, movedOn) {
				sum.GapsExplained++
				continue
			}
			report(AnomalyStatusGap, key, "no status for version %d (%s, applied by %s at %s), and no kill of %s, cut of its link or stop of its node then",
				v, e.describe(), e.Worker, time.UnixMilli(e.At).Format("15:04:05.000"), e.Worker)
		}
	}

	// Dead letters.
	sum.DeadLetters = len(h.DeadLetters)
	lettered := map[string]bool{}
	for _, dl := range h.DeadLetters {
		lettered[dl.JobID] = true
		p := byJob[dl.JobID]
		code, _, _ := strings.Cut(dl.Reason, ":")
		switch {
		case dl.Reason == "":
			report(AnomalyDeadLetter, dl.Key, "dead letter of job %s has no reason", dl.JobID)
		case p == nil:
			report(AnomalyDeadLetter, dl.Key, "dead letter of job %s, which no producer sent: %s", dl.JobID, dl.Reason)
		case p.valid():
			report(AnomalyDeadLetter, dl.Key, "valid job %s (%s p%d n%d) dead-lettered: %s", dl.JobID, p.Kind, p.Producer, p.Seq, dl.Reason)
		case p.Kind == KindMalformed && code != contract.CodeMalformed, p.Kind == KindUnknown && code != contract.CodeUnknownEvent:
			report(AnomalyDeadLetter, dl.Key, "%s job %s dead-lettered for another reason: %s", p.Kind, dl.JobID, dl.Reason)
		}
	}
	for i := range h.Publishes {
		p := &h.Publishes[i]
		if !p.valid() && p.Acked && !lettered[p.Job] {
			report(AnomalyDeadLetterMissing, p.Key, "%s job %s acknowledged at %s as stream sequence %d, not among the dead letters%s", p.Kind, p.Job, p.AckedAt.Format("15:04:05.000"), p.Sequence, acksOf(h.Acks, p.Sequence))
		}
	}

	for _, m := range h.Memory {
		if m.Limit > 0 && m.Max > m.Limit {
			report(AnomalyMemory, "", "worker %s used %d bytes (resident) at %s, over its limit of %d", m.Worker, m.Max, m.At.Format("15:04:05"), m.Limit)
		}
	}
	for _, e := range h.Exits {
		if e.crashed() {
			report(AnomalyCrash, "", "%s exited on its own at %s: %s\n%s", e.Name, e.At.Format("15:04:05.000"), e.Err, indent(e.LogTail, "      "))
		}
	}
	for _, e := range h.Errors {
		report(AnomalyError, "", "%s", e)
	}
	return out, sum
}

// describe names the entry's event.
func (e Entry) describe() string {
	switch e.Kind {
	case EntryAdd, EntryWork:
		return fmt.Sprintf("%s p%d n%d", e.event(), e.Producer, e.Seq)
	}
	return e.event()
}

// event is the name of the event the entry logs.
func (e Entry) event() string {
	switch e.Kind {
	case EntryAdd:
		return string(EventAdd)
	case EntryWork:
		return string(EventWork)
	case EntryDone:
		return string(EventDone)
	case EntryFailed:
		return string(EventFailed)
	}
	return "?" + e.Kind
}

func versionsOf(log []Entry, e Entry) string {
	var vs []string
	for i, o := range log {
		if (o.Kind == EntryAdd || o.Kind == EntryWork) && o.Producer == e.Producer && o.Seq == e.Seq {
			vs = append(vs, fmt.Sprint(i+1))
		}
	}
	return strings.Join(vs, ", ")
}

func indent(s, prefix string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return prefix + strings.ReplaceAll(s, "\n", "\n"+prefix)
}

// handledBy says which keys' records list seq among the events they
// handled: an event acknowledged as handled by a record that names its
// sequence was never applied if its key's log lacks it.
func handledBy(states map[string]contract.StateRecord, seq uint64) string {
	if seq == 0 {
		return ""
	}
	var keys []string
	for k, rec := range states {
		if slices.Contains(rec.Applied, seq) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return "; no key's record lists its sequence as handled"
	}
	slices.Sort(keys)
	return "; listed as handled in the record of " + strings.Join(keys, ", ")
}

// acksOf says what the workers answered to the deliveries of the event
// stored as seq, as far as the soak saw.
func acksOf(acks map[uint64][]Ack, seq uint64) string {
	if acks == nil || seq == 0 {
		return ""
	}
	as := acks[seq]
	if len(as) == 0 {
		return "; no acknowledgement, nak or term of it was seen"
	}
	var parts []string
	for _, a := range as {
		parts = append(parts, fmt.Sprintf("%s at %s (delivery %d, %s)", a.Kind, a.At.Format("15:04:05.000"), a.Delivered, a.Consumer))
	}
	return "; answered " + strings.Join(parts, ", ")
}
