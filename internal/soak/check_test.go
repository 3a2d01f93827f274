package soak

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/orderly-dev/orderly/contract"
)

// t0 is the hand-made histories' clock.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// keyHist is one key of a hand-made history: what was sent, what its log
// holds, and the statuses announced for it.
type keyHist struct {
	key      string
	pubs     []Publish
	log      []Entry
	statuses []contract.Status
	state    string
	pending  int
}

func (k *keyHist) send(kind string, p, n int) string {
	job := jobID(7, p, k.key, n)
	if kind == KindMalformed || kind == KindUnknown {
		job = "s7-x-" + k.key + "-" + kind
	}
	k.pubs = append(k.pubs, Publish{Job: job, Key: k.key, Kind: kind, Producer: p, Seq: n, Attempts: 1, Acked: true, First: at(0), AckedAt: at(1)})
	return job
}

// apply logs an event of a producer, as worker w applied it, and announces it.
func (k *keyHist) apply(kind string, p, n int, w string) {
	job := k.send(kind, p, n)
	e := Entry{Kind: EntryAdd, Producer: p, Seq: n, Worker: w, At: at(10 * (len(k.log) + 1)).UnixMilli()}
	to := Ready
	if kind == KindWork {
		e.Kind, to = EntryWork, Busy
	}
	k.log = append(k.log, e)
	k.announce(string(to), job, kind, nil)
}

// outcome logs the outcome of the pending work (done or failed).
func (k *keyHist) outcome(kind, w string) {
	var job string
	for i := len(k.log) - 1; i >= 0; i-- {
		if k.log[i].Kind == EntryWork {
			job = jobID(7, k.log[i].Producer, k.key, k.log[i].Seq)
			break
		}
	}
	e := Entry{Kind: kind, Worker: w, At: at(10 * (len(k.log) + 1)).UnixMilli()}
	var serr *contract.StatusError
	if kind == EntryDone {
		e.Job = job
	} else {
		serr = &contract.StatusError{Code: contract.CodeActionFailed, Message: "slow: simulated gateway failure"}
	}
	k.log = append(k.log, e)
	k.announce(string(Ready), job, e.event(), serr)
}

func (k *keyHist) announce(to, job, event string, serr *contract.StatusError) {
	from := string(Ready)
	if n := len(k.statuses); n > 0 {
		from = k.statuses[n-1].To
	}
	k.statuses = append(k.statuses, contract.Status{
		Workflow: Workflow, Key: k.key, JobID: job, Event: event, From: from, To: to,
		Version: uint64(len(k.log)), At: at(10*len(k.log) + 5), Settled: to == string(Ready), Error: serr,
	})
}

// cleanHistory is a run with nothing wrong: two keys' events applied and
// announced, slow work done and failed, a retry, a poison event
// dead-lettered.
func cleanHistory(t *testing.T) *History {
	t.Helper()
	k1 := &keyHist{key: "k1"}
	k1.apply(KindAdd, 1, 1, "w0")
	k1.apply(KindWork, 1, 2, "w0")
	k1.statuses = append(k1.statuses, contract.Status{Workflow: Workflow, Key: "k1", JobID: jobID(7, 1, "k1", 2), Event: ActionSlow, From: "busy", To: "busy", Version: 2, At: at(25), Action: ActionSlow, Attempt: 2,
		Error: &contract.StatusError{Code: contract.CodeRetrying, Message: "attempt 1: simulated gateway failure"}})
	k1.outcome(EntryDone, "w1")
	k1.apply(KindAdd, 2, 1, "w1")
	k2 := &keyHist{key: "k2"}
	k2.apply(KindWork, 1, 1, "w2")
	k2.outcome(EntryFailed, "w2")
	bad := k2.send(KindMalformed, 1, 0)
	k2.statuses = append(k2.statuses, contract.Status{Workflow: Workflow, Key: "k2", JobID: bad, From: "ready", To: "ready", Version: 2, At: at(50),
		Error: &contract.StatusError{Code: contract.CodeMalformed, Message: "not JSON"}})
	h := &History{
		Workers:     []string{"w0", "w1", "w2"},
		States:      map[string]contract.StateRecord{},
		DeadLetters: []DeadLetter{{Key: "k2", JobID: bad, Reason: "malformed: not JSON"}},
		Memory:      []MemorySample{{Worker: "w0", Max: 100 << 20, Limit: 256 << 20, At: at(0)}},
	}
	for _, k := range []*keyHist{k1, k2} {
		addKey(t, h, k)
	}
	return h
}

// addKey adds k to h, its state made from its log.
func addKey(t *testing.T, h *History, k *keyHist) {
	t.Helper()
	h.Publishes = append(h.Publishes, k.pubs...)
	h.Statuses = append(h.Statuses, k.statuses...)
	data, err := json.Marshal(Data{Log: k.log})
	if err != nil {
		t.Fatal(err)
	}
	state := k.state
	if state == "" {
		state = string(Ready)
	}
	rec := contract.StateRecord{State: state, Version: uint64(len(k.log)), Data: data, UpdatedAt: at(100)}
	for range k.pending {
		rec.Pending = append(rec.Pending, contract.PendingWork{ID: k.key + "/1/slow", Action: ActionSlow})
	}
	h.States[k.key] = rec
}

func kinds(as []Anomaly) []string {
	var ks []string
	for _, a := range as {
		if !slices.Contains(ks, a.Kind) {
			ks = append(ks, a.Kind)
		}
	}
	return ks
}

func TestCheckCleanHistory(t *testing.T) {
	h := cleanHistory(t)
	as, sum := Check(h)
	if len(as) != 0 {
		t.Fatalf("anomalies in a clean history: %v", as)
	}
	want := Summary{Keys: 2, Sent: 5, Acked: 5, Applied: 4, Outcomes: 2, Failed: 1, Statuses: 8, DeadLetters: 1, Retries: 1}
	if !reflect.DeepEqual(sum, want) {
		t.Errorf("summary %+v, want %+v", sum, want)
	}
}

// TestCheckFindsEachAnomaly breaks a clean history in one way per case and
// wants the checker to report that kind of anomaly, and only that kind.
func TestCheckFindsEachAnomaly(t *testing.T) {
	status := func(h *History, key string, v uint64) *contract.Status {
		for i := range h.Statuses {
			if st := &h.Statuses[i]; st.Key == key && st.Version == v && changed(st) {
				return st
			}
		}
		t.Fatalf("no status of %s v%d", key, v)
		return nil
	}
	for _, c := range []struct {
		kind   string
		break_ func(t *testing.T, h *History)
	}{
		{AnomalyLost, func(t *testing.T, h *History) {
			k := &keyHist{key: "k1"}
			k.send(KindAdd, 1, 3) // acknowledged, never applied
			h.Publishes = append(h.Publishes, k.pubs...)
		}},
		{AnomalyDoubled, func(t *testing.T, h *History) {
			k := &keyHist{key: "k3"}
			k.apply(KindAdd, 1, 1, "w0")
			k.log = append(k.log, k.log[0]) // applied again, as a second version
			k.announce("ready", k.pubs[0].Job, "add", nil)
			addKey(t, h, k)
		}},
		{AnomalyPhantom, func(t *testing.T, h *History) {
			k := &keyHist{key: "k3"}
			k.apply(KindAdd, 1, 1, "w0")
			k.pubs = nil // nobody sent it
			addKey(t, h, k)
		}},
		{AnomalyReordered, func(t *testing.T, h *History) {
			k := &keyHist{key: "k3"}
			k.apply(KindAdd, 1, 2, "w0")
			k.apply(KindAdd, 1, 1, "w0")
			addKey(t, h, k)
		}},
		{AnomalyLogInvalid, func(t *testing.T, h *History) {
			rec := h.States["k1"]
			rec.Version++ // a version with no log entry
			h.States["k1"] = rec
		}},
		{AnomalyUnsettled, func(t *testing.T, h *History) {
			k := &keyHist{key: "k3", state: string(Busy), pending: 1}
			k.apply(KindWork, 1, 1, "w0") // its outcome never came
			addKey(t, h, k)
		}},
		{AnomalyStatusGap, func(t *testing.T, h *History) {
			st := status(h, "k1", 3)
			h.Statuses = slices.DeleteFunc(h.Statuses, func(s contract.Status) bool { return s == *st })
		}},
		{AnomalyStatusRepeat, func(t *testing.T, h *History) {
			st := *status(h, "k1", 2)
			st.JobID, st.At = jobID(7, 2, "k1", 9), st.At.Add(time.Millisecond)
			h.Statuses = append(h.Statuses, st)
		}},
		{AnomalyStatusMismatch, func(t *testing.T, h *History) {
			status(h, "k1", 1).JobID = jobID(7, 2, "k1", 1)
		}},
		{AnomalyStatusAhead, func(t *testing.T, h *History) {
			st := *status(h, "k1", 4)
			st.Version, st.JobID, st.At = 5, jobID(7, 2, "k1", 2), st.At.Add(time.Second)
			h.Statuses = append(h.Statuses, st)
		}},
		{AnomalyRejected, func(t *testing.T, h *History) {
			st := *status(h, "k1", 2)
			st.JobID, st.Event, st.To, st.At = jobID(7, 2, "k1", 1), "add", st.From, st.At.Add(time.Millisecond)
			st.Error = &contract.StatusError{Code: contract.CodeInvalidTransition, Message: "busy does not take add"}
			h.Statuses = append(h.Statuses, st)
		}},
		{AnomalyDeadLetter, func(t *testing.T, h *History) {
			h.DeadLetters = append(h.DeadLetters, DeadLetter{Key: "k1", JobID: jobID(7, 1, "k1", 1), Reason: "max_deliveries: could not load"})
		}},
		{AnomalyDeadLetterMissing, func(t *testing.T, h *History) {
			h.DeadLetters = nil
		}},
		{AnomalyMemory, func(t *testing.T, h *History) {
			h.Memory[0].Max = h.Memory[0].Limit + 1
		}},
		{AnomalyCrash, func(t *testing.T, h *History) {
			h.Exits = append(h.Exits, Exit{Name: "w1", Worker: true, Err: "exit status 2", LogTail: "panic: runtime error: index out of range"})
		}},
		{AnomalyError, func(t *testing.T, h *History) {
			h.Errors = append(h.Errors, "w1 did not exit within 25s of SIGTERM (killed)")
		}},
	} {
		t.Run(c.kind, func(t *testing.T) {
			h := cleanHistory(t)
			c.break_(t, h)
			as, _ := Check(h)
			if got := kinds(as); !slices.Equal(got, []string{c.kind}) {
				t.Fatalf("anomaly kinds %v, want [%s]; anomalies:\n%v", got, c.kind, as)
			}
			// The report names the kind and the key's history.
			var b strings.Builder
			(&Result{Seed: 7, Anomalies: as, History: h}).Print(&b)
			if !strings.Contains(b.String(), "== "+c.kind+": ") {
				t.Errorf("report does not show %s:\n%s", c.kind, b.String())
			}
			if as[0].Key != "" && !strings.Contains(b.String(), "history of "+as[0].Key) {
				t.Errorf("report does not show the history of %s:\n%s", as[0].Key, b.String())
			}
		})
	}
	if len(AnomalyKinds()) != 16 {
		t.Errorf("%d anomaly kinds, the test covers 16: add a case", len(AnomalyKinds()))
	}
}

// TestCheckExplainsGapsByFaults: a status lost when the worker that
// committed it was killed, or its link cut or dropped, or the node it was
// connected to stopped, a moment after the commit, is no anomaly; one lost
// at a gentle stop (SIGTERM drains), a stall (it delivers what it held),
// long after such a fault, or at another worker's or node's, is. The one
// stall that explains a gap is the known one: long enough to time the
// commit out, and the key's next version applied by another worker.
func TestCheckExplainsGapsByFaults(t *testing.T) {
	commit := time.UnixMilli(cleanHistory(t).mustEntry(t, "k1", 3).At) // w1's
	onN2 := map[string][]Link{"w1": {{Node: 2, From: commit.Add(-time.Minute), To: commit.Add(time.Minute)}}}
	onN0 := map[string][]Link{"w1": {{Node: 0, From: commit.Add(-time.Minute)}}}
	for _, c := range []struct {
		fault Fault
		links map[string][]Link
		gap   bool
	}{
		{Fault{Kind: WorkerKill, Target: 1, Start: commit.Add(time.Second), End: commit.Add(4 * time.Second)}, nil, false},
		{Fault{Kind: ProxyCut, Target: 1, Start: commit.Add(500 * time.Millisecond), End: commit.Add(time.Second)}, nil, false},
		{Fault{Kind: ProxyDrop, Target: 1, Start: commit.Add(-3 * time.Second), End: commit.Add(-500 * time.Millisecond)}, nil, false},
		{Fault{Kind: NodeKill, Target: 2, Start: commit.Add(2 * time.Second), End: commit.Add(9 * time.Second), Cuts: []time.Time{commit.Add(2 * time.Second)}}, onN2, false},
		{Fault{Kind: DiskFull, Target: 2, Start: commit.Add(-20 * time.Second), End: commit.Add(time.Second), Cuts: []time.Time{commit.Add(-20 * time.Second), commit}}, onN2, false},
		{Fault{Kind: NodeKill, Target: 2, Start: commit.Add(2 * time.Second), End: commit.Add(9 * time.Second), Cuts: []time.Time{commit.Add(2 * time.Second)}}, onN0, true},
		{Fault{Kind: WorkerKill, Target: 1, Start: commit.Add(10 * time.Second), End: commit.Add(14 * time.Second)}, nil, true},
		{Fault{Kind: WorkerKill, Target: 1, Start: commit.Add(-2 * time.Second), End: commit.Add(2 * time.Second)}, nil, true},
		{Fault{Kind: WorkerKill, Target: 0, Start: commit, End: commit.Add(time.Second)}, nil, true},
		{Fault{Kind: WorkerTerm, Target: 1, Start: commit, End: commit.Add(time.Second)}, nil, true},
		{Fault{Kind: ProxyStall, Target: 1, Start: commit, End: commit.Add(5 * time.Second), Hold: 5 * time.Second}, nil, true},
		{Fault{Kind: ProxyDelay, Target: 1, Start: commit, End: commit.Add(time.Second)}, nil, true},
	} {
		h := cleanHistory(t)
		h.Statuses = slices.DeleteFunc(h.Statuses, func(s contract.Status) bool { return s.Key == "k1" && s.Version == 3 && changed(&s) })
		h.Faults, h.Links = []Fault{c.fault}, c.links
		as, sum := Check(h)
		if gap := slices.Contains(kinds(as), AnomalyStatusGap); gap != c.gap || len(as) > 1 {
			t.Errorf("%s of %d from %s: anomalies %v, want a gap: %v", c.fault.Kind, c.fault.Target, c.fault.Start.Sub(commit), as, c.gap)
		}
		if !c.gap && (sum.GapsExplained != 1 || sum.GapsBy[c.fault.Kind] != 1) {
			t.Errorf("%s: %d gaps explained (%v), want 1 by it", c.fault.Kind, sum.GapsExplained, sum.GapsBy)
		}
	}

	// k1's version 4 is w1's too, version 3's is not: the stall that held
	// w0's commit of version 2 past its timeout, with the key moving to
	// w1, explains version 2's gap; a short one does not, nor one at w1's
	// version 3 (the key stayed with w1).
	for _, c := range []struct {
		v     uint64
		hold  time.Duration
		stall int
		gap   bool
	}{
		{2, 6 * time.Second, 0, false},
		{2, 2 * time.Second, 0, true},
		{3, 6 * time.Second, 1, true},
	} {
		h := cleanHistory(t)
		at := time.UnixMilli(h.mustEntry(t, "k1", int(c.v)).At)
		h.Statuses = slices.DeleteFunc(h.Statuses, func(s contract.Status) bool { return s.Key == "k1" && s.Version == c.v && changed(&s) })
		h.Faults = []Fault{{Kind: ProxyStall, Target: c.stall, Hold: c.hold, Start: at.Add(10 * time.Millisecond), End: at.Add(c.hold)}}
		as, _ := Check(h)
		if gap := slices.Contains(kinds(as), AnomalyStatusGap); gap != c.gap || len(as) > 1 {
			t.Errorf("stall of %s at v%d: anomalies %v, want a gap: %v", c.hold, c.v, as, c.gap)
		}
	}
}

// TestCheckWorkerGivingUpIsNoCrash: a worker that exits 1 on its own (a
// start-up that timed out) is restarted and reported, not an anomaly; one
// that panics, and any node that exits, is.
func TestCheckWorkerGivingUpIsNoCrash(t *testing.T) {
	for _, c := range []struct {
		exit  Exit
		crash bool
	}{
		{Exit{Name: "w0", Worker: true, Err: "exit status 1", LogTail: "soak: queue: provision stream ORDERLY_TIMERS_SOAK: context deadline exceeded"}, false},
		{Exit{Name: "w0", Worker: true, Err: "exit status 2", LogTail: "panic: boom\ngoroutine 1 [running]:"}, true},
		{Exit{Name: "n1", Err: "exit status 1", LogTail: "[FTL] no space"}, true},
	} {
		h := cleanHistory(t)
		h.Exits = []Exit{c.exit}
		as, _ := Check(h)
		if got := len(as) == 1 && as[0].Kind == AnomalyCrash; got != c.crash {
			t.Errorf("%+v: anomalies %v, want a crash: %v", c.exit, as, c.crash)
		}
	}
}

func (h *History) mustEntry(t *testing.T, key string, v int) Entry {
	t.Helper()
	var d Data
	if err := json.Unmarshal(h.States[key].Data, &d); err != nil || len(d.Log) < v {
		t.Fatalf("%s has no version %d: %v", key, v, err)
	}
	return d.Log[v-1]
}

// TestRecheckSavedHistory: a history saved by a run reads back the same,
// and soak -recheck checks it again: exit status ErrAnomalies and the
// report when the check finds anything.
func TestRecheckSavedHistory(t *testing.T) {
	h := cleanHistory(t)
	h.Seed, h.Args = 7, "-seed 7"
	h.Faults = []Fault{{Kind: NodeKill, Target: 1, At: time.Second, Hold: time.Second, Start: at(0), End: at(1000), Cuts: []time.Time{at(0)}}}
	h.Links = map[string][]Link{"w0": {{Node: 1, From: at(0)}}}
	path := filepath.Join(t.TempDir(), "history.json")
	if err := saveHistory(path, h); err != nil {
		t.Fatal(err)
	}
	back, err := LoadHistory(path)
	if err != nil {
		t.Fatal(err)
	}
	if as, _ := Check(back); len(as) != 0 {
		t.Fatalf("anomalies in the clean history read back: %v", as)
	}
	if !reflect.DeepEqual(back.Faults[0].Cuts, h.Faults[0].Cuts) || back.Links["w0"][0].Node != 1 || len(back.Publishes) != len(h.Publishes) {
		t.Fatalf("read back %+v, saved %+v", back, h)
	}

	h.DeadLetters = nil // a poison event acknowledged and never dead-lettered
	if err := saveHistory(path, h); err != nil {
		t.Fatal(err)
	}
	var out, errs strings.Builder
	err = Main(context.Background(), []string{"-recheck", path}, func(string) string { return "" }, &out, &errs)
	if !errors.Is(err, ErrAnomalies) || !strings.Contains(out.String(), "== "+AnomalyDeadLetterMissing) || !strings.Contains(out.String(), "replay: make soak ARGS='-seed 7'") {
		t.Fatalf("recheck: %v\n%s%s", err, out.String(), errs.String())
	}
}

// TestRecordAcks: the acknowledgements of the events stream's deliveries
// are read from their subjects in both of JetStream's forms, each once
// whichever watcher saw it, and a lost event's report says what became of
// its deliveries.
func TestRecordAcks(t *testing.T) {
	r := &recorder{seen: map[statusID]bool{}, acks: map[uint64][]Ack{}, ackSeen: map[string]bool{}}
	for _, m := range []*nats.Msg{
		{Subject: "$JS.ACK.ORDERLY_EVENTS_SOAK.orderly_soak_p3.1.17.5.1764500000000000000.0", Data: []byte("+ACK")},
		{Subject: "$JS.ACK.ORDERLY_EVENTS_SOAK.orderly_soak_p3.1.17.5.1764500000000000000.0", Data: []byte("+ACK")}, // another watcher's copy
		{Subject: "$JS.ACK._.HASH.ORDERLY_EVENTS_SOAK.orderly_soak_p3.2.18.6.1764500000000000001.3.xyz", Data: []byte(`-NAK {"delay": 1000000000}`)},
		{Subject: "$JS.ACK.ORDERLY_EVENTS_SOAK.orderly_soak_p3.3.18.7.1764500000000000002.0", Data: nil},
		{Subject: "$JS.ACK.KV_orderly_state_soak.c.1.9.1.1764500000000000000.0", Data: []byte("+ACK")},
	} {
		r.addAck(m)
	}
	if len(r.acks[17]) != 1 || r.acks[17][0].Kind != "+ACK" || r.acks[17][0].Consumer != "orderly_soak_p3" {
		t.Errorf("sequence 17: %+v", r.acks[17])
	}
	if got := r.acks[18]; len(got) != 2 || got[0].Kind != "-NAK" || got[0].Delivered != 2 || got[1].Kind != "+ACK" || got[1].Delivered != 3 {
		t.Errorf("sequence 18: %+v", got)
	}
	if len(r.acks) != 2 {
		t.Errorf("acks of other streams kept: %v", r.acks)
	}
	if s := acksOf(r.acks, 18); !strings.Contains(s, "-NAK at") || !strings.Contains(s, "delivery 3") {
		t.Errorf("acksOf: %s", s)
	}
	if s := acksOf(r.acks, 19); !strings.Contains(s, "no acknowledgement") {
		t.Errorf("acksOf an unanswered event: %s", s)
	}
}

// TestCheckExplainsAGapOfACommitHeldUpThenKilled (seed 105): a stall of
// w1's link began as it committed version 3 and held the write 9 s; w1 was
// killed 8 s after the commit, during the stall, and the write went out when
// the stall ended: the state has the version, and its status died with w1.
// The kill explains the gap, though it came long after the commit; without
// the stall, or with a stall of another worker, it does not.
func TestCheckExplainsAGapOfACommitHeldUpThenKilled(t *testing.T) {
	commit := time.UnixMilli(cleanHistory(t).mustEntry(t, "k1", 3).At) // w1's
	kill := Fault{Kind: WorkerKill, Target: 1, Start: commit.Add(8 * time.Second), End: commit.Add(11 * time.Second)}
	for _, c := range []struct {
		stall *Fault
		gap   bool
	}{
		{&Fault{Kind: ProxyStall, Target: 1, Hold: 9 * time.Second, Start: commit.Add(10 * time.Millisecond), End: commit.Add(9 * time.Second)}, false},
		{&Fault{Kind: ProxyStall, Target: 0, Hold: 9 * time.Second, Start: commit.Add(10 * time.Millisecond), End: commit.Add(9 * time.Second)}, true},
		{nil, true},
	} {
		h := cleanHistory(t)
		h.Statuses = slices.DeleteFunc(h.Statuses, func(s contract.Status) bool { return s.Key == "k1" && s.Version == 3 && changed(&s) })
		h.Faults = []Fault{kill}
		if c.stall != nil {
			h.Faults = append(h.Faults, *c.stall)
		}
		as, sum := Check(h)
		if gap := slices.Contains(kinds(as), AnomalyStatusGap); gap != c.gap || len(as) > 1 {
			t.Errorf("stall %+v: anomalies %v, want a gap: %v", c.stall, as, c.gap)
		}
		if !c.gap && sum.GapsBy[WorkerKill] != 1 {
			t.Errorf("stall %+v: gaps explained by %v, want 1 by the kill", c.stall, sum.GapsBy)
		}
	}
}
