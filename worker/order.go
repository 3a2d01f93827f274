package worker

import (
	"slices"
	"time"

	"github.com/orderly-dev/orderly/internal/queue"
)

// Per-key order when events go back to the stream. An event whose key's
// state cannot be loaded or committed is nak'ed, to come again after a delay
// (giveBack); meanwhile the key's later events keep coming, and applied at
// once they would be applied before it. So each key keeps the events it
// handed back and has not had again, and its actor hands back, too, every
// event newer than the oldest of them (holdBack), with the same delay: they
// come again after it. An event older than all of them (a duplicate, say)
// goes through. An event dead-lettered instead is never applied, and holds
// nothing up.

// handedBack is what one key has handed back and not had again.
type handedBack struct {
	seqs      []uint64 // stream sequences, ascending
	partition int
	// delay is the longest delay they were nak'ed with: what events held
	// back behind them are nak'ed with, so that those come again after
	// them, rather than sooner and again and again, each time counted as a
	// delivery.
	delay time.Duration
	// since is when seqs[0] became the oldest. An event nak'ed comes again
	// after its delay, or after the ack wait if the nak was lost; one that
	// has not long after (removed from the stream by hand, say) no longer
	// holds its key up.
	since time.Time
}

// handedBackFor bounds how long a key waits for an event it handed back.
func (f *flow) handedBackFor(h *handedBack) time.Duration {
	return h.delay + f.spec.AckWait + 5*time.Second
}

// noteHandedBack records that m goes back to the stream, to come again
// after delay. It is called before the nak, so that m cannot come again
// unnoticed.
func (f *flow) noteHandedBack(m *queue.Msg, delay time.Duration) {
	if isTick(m) {
		return // it may expire before it comes again; the next tick will do
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.handedBack[m.Key]
	if h == nil {
		h = &handedBack{partition: m.Partition}
		f.handedBack[m.Key] = h
	}
	h.delay = max(h.delay, delay)
	h.note(m.Sequence, f.w.cfg.Now())
}

func (h *handedBack) note(seq uint64, now time.Time) {
	i, found := slices.BinarySearch(h.seqs, seq)
	if found {
		return
	}
	h.seqs = slices.Insert(h.seqs, i, seq)
	if i == 0 {
		h.since = now
	}
}

// holdBack takes out of a's mailbox, notes as handed back and returns the
// events that must not be applied yet: those newer than an event of the key
// that went back and has not come again. They are to be nak'ed with the
// delay returned. f.mu held.
func (f *flow) holdBack(a *actor) ([]*queue.Msg, time.Duration) {
	h := f.handedBack[a.key]
	if h == nil {
		return nil, 0
	}
	now := f.w.cfg.Now()
	var back []*queue.Msg
	keep := a.mailbox[:0]
	for _, m := range a.mailbox {
		if len(h.seqs) > 0 && now.Sub(h.since) > f.handedBackFor(h) {
			f.log.Warn().Str("key", a.key).Uint64("seq", h.seqs[0]).Msg("an event handed back did not come again; the key's later events go on without it")
			h.seqs = nil
		}
		switch {
		case len(h.seqs) == 0 || m.Sequence < h.seqs[0]:
			keep = append(keep, m)
		case m.Sequence == h.seqs[0]:
			h.seqs = h.seqs[1:]
			h.since = now
			keep = append(keep, m)
		default:
			if !isTick(m) {
				h.note(m.Sequence, now)
			}
			back = append(back, m)
		}
	}
	clear(a.mailbox[len(keep):])
	a.mailbox = keep
	delay := h.delay
	if len(h.seqs) == 0 {
		delete(f.handedBack, a.key)
	}
	if len(back) > 0 && a.room != nil {
		close(a.room)
		a.room = nil
	}
	return back, delay
}

// forgetHandedBack drops what the keys of partition p (every partition for
// -1) handed back: once the partition has another owner, those events are
// its to order. f.mu held.
func (f *flow) forgetHandedBack(p int) {
	for key, h := range f.handedBack {
		if p < 0 || h.partition == p {
			delete(f.handedBack, key)
		}
	}
}

// expireHandedBack drops what keys handed back long ago and never had
// again, so that memory stays bounded even when no later event of the key
// comes to notice it.
func (f *flow) expireHandedBack() {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.w.cfg.Now()
	for key, h := range f.handedBack {
		if now.Sub(h.since) > f.handedBackFor(h) {
			delete(f.handedBack, key)
		}
	}
}
