package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clock gives every timestamp of a run as nanoseconds since one base, so
// that runs record them in preallocated []int64 rather than []time.Time.
type clock struct{ base time.Time }

func newClock() clock                 { return clock{base: time.Now()} }
func (c clock) now() int64            { return int64(time.Since(c.base)) }
func (c clock) at(ns int64) time.Time { return c.base.Add(time.Duration(ns)) }

// ackWaiter is a publish awaiting its acknowledgement.
type ackWaiter interface {
	wait(ctx context.Context) error
}

// publishWindow publishes n messages keeping at most window awaiting their
// ack, waiting for the oldest when the window is full.
func publishWindow(ctx context.Context, n, window int, pub func(i int) (ackWaiter, error)) error {
	ring := make([]ackWaiter, min(window, n))
	for i := range n {
		slot := i % len(ring)
		if ring[slot] != nil {
			if err := ring[slot].wait(ctx); err != nil {
				return err
			}
		}
		w, err := pub(i)
		if err != nil {
			return err
		}
		ring[slot] = w
	}
	for i := n; i < n+len(ring); i++ {
		if w := ring[i%len(ring)]; w != nil {
			if err := w.wait(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// publishPaced publishes n messages at rate per second, open loop: message i
// is due at start + i/rate, and a late pacer catches up at once rather than
// slowing the schedule. sendAt[i] is when message i was handed to the client
// library, ackAt[i] when its ack was seen. Acks are collected in publish
// order by one goroutine (JetStream acks one stream's messages in order).
// It returns the rate achieved.
func publishPaced(ctx context.Context, c clock, n, rate int, sendAt, ackAt []int64, pub func(i int) (ackWaiter, error)) (float64, error) {
	type item struct {
		i int
		w ackWaiter
	}
	ch := make(chan item, 8192)
	var (
		wg     sync.WaitGroup
		ackErr error
	)
	wg.Go(func() {
		for it := range ch {
			if err := it.w.wait(ctx); err != nil && ackErr == nil {
				ackErr = err
			}
			ackAt[it.i] = c.now()
		}
	})
	interval := float64(time.Second) / float64(rate)
	start := c.now()
	var pubErr error
	for i := range n {
		due := start + int64(float64(i)*interval)
		if d := due - c.now(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		sendAt[i] = c.now()
		w, err := pub(i)
		if err != nil {
			pubErr = err
			break
		}
		ch <- item{i, w}
	}
	end := c.now()
	close(ch)
	wg.Wait()
	if pubErr != nil {
		return 0, pubErr
	}
	if ackErr != nil {
		return 0, ackErr
	}
	return float64(n) / time.Duration(end-start).Seconds(), nil
}

// latencies returns the p50 and p99 of to[i]-from[i] over the i where both
// are set.
func latencies(from, to []int64) (p50, p99 time.Duration) {
	d := make([]int64, 0, len(from))
	for i := range from {
		if from[i] > 0 && to[i] > 0 {
			d = append(d, to[i]-from[i])
		}
	}
	if len(d) == 0 {
		return 0, 0
	}
	slices.Sort(d)
	q := func(p float64) time.Duration { return time.Duration(d[min(len(d)-1, int(p*float64(len(d))))]) }
	return q(0.50), q(0.99)
}

// resetPeakRSS returns what memory it can to the OS and restarts the
// kernel's high-water mark of the process's resident set (VmHWM) from the
// current RSS. False where that is not possible.
func resetPeakRSS() bool {
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// peakRSS reads VmHWM: the peak resident set of this process since start or
// since resetPeakRSS (with -server inproc: server, worker and load generator
// together).
func peakRSS() uint64 { return vmHWM("/proc/self/status") }

func vmHWM(statusFile string) uint64 {
	b, err := os.ReadFile(statusFile)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

func (r result) String() string {
	s := fmt.Sprintf("%s events/s", group(r.eps))
	if r.rate > 0 {
		s = fmt.Sprintf("%s events/s achieved, enqueue-ack p50 %s p99 %s, enqueue→done p50 %s p99 %s",
			group(r.rate), ms(r.ackP50), ms(r.ackP99), ms(r.doneP50), ms(r.doneP99))
	}
	if r.cpu > 0 && r.rate == 0 {
		s += fmt.Sprintf(", %.1f µs CPU per event", float64(r.cpu)/1e3)
		if r.serverCPU > 0 {
			s += fmt.Sprintf(" (server process: %.1f)", float64(r.serverCPU)/1e3)
		}
	}
	if r.allocs > 0 && r.rate == 0 {
		s += fmt.Sprintf(", %.0f allocations (%.0f B) per event", r.allocs, r.allocBytes)
	}
	s += fmt.Sprintf(", peak RSS %s", mib(r.rss))
	if r.serverRSS > 0 {
		s += fmt.Sprintf(" (server process: %s)", mib(r.serverRSS))
	}
	if r.drained > 0 {
		s += fmt.Sprintf(", wake-ups gone %s after", r.drained.Round(time.Millisecond))
	}
	if r.actors > 0 {
		s += fmt.Sprintf(", peak live actors %d", r.actors)
	}
	if r.errors > 0 {
		s += fmt.Sprintf(", %d ERRORS", r.errors)
	}
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func mib(b uint64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
}

// group formats v with thousands separators.
func group(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// peakHeap keeps the in-use heap profile of the moment the Go heap was
// largest among its samples, to show what the peak is made of.
type peakHeap struct {
	path string
	max  uint64
	prof bytes.Buffer
}

// heapObjects is the Go heap's objects, live or not yet swept, in bytes.
func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// goMemory reads the Go heap found live by the last collection and the
// goroutine stacks, in bytes.
func goMemory() (live, stacks uint64) {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64()
}

func (h *peakHeap) sample() {
	if h.path == "" {
		return
	}
	if v := heapObjects(); v > h.max {
		h.max = v
		h.prof.Reset()
		_ = pprof.Lookup("heap").WriteTo(&h.prof, 0)
	}
}

func (h *peakHeap) write() error {
	if h.path == "" || h.prof.Len() == 0 {
		return nil
	}
	fmt.Printf("  heap profile at the peak (%s of objects) written to %s\n", mib(h.max), h.path)
	return os.WriteFile(h.path, h.prof.Bytes(), 0o644)
}

// heapAllocs is a count of the Go heap's allocations since the start.
type heapAllocs struct{ objects, bytes uint64 }

// allocated reads the Go heap's allocations since the process started.
func allocated() heapAllocs {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return heapAllocs{s[0].Value.Uint64(), s[1].Value.Uint64()}
}

// per returns the allocations since from, per event.
func (h heapAllocs) per(from heapAllocs, n int) (objects, bytes float64) {
	return float64(h.objects-from.objects) / float64(n), float64(h.bytes-from.bytes) / float64(n)
}
