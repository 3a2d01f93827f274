package queue

import (
	"strconv"
	"strings"

	"github.com/orderly-dev/orderly/contract"
)

// The contract's names (subjects, streams, buckets, key rules) are in
// package contract; these are the runtime's own, which no producer sees.

func consumerName(workflow string, p int) string {
	return "orderly_" + workflow + "_p" + strconv.Itoa(p)
}

// scheduleSubject holds the pending schedule of one kind for key.
func scheduleSubject(workflow, kind, key string) string {
	return contract.Namespace + ".timers." + workflow + "." + kind + "." + key
}

// PendingTimers is the filter of workflow's pending schedules of kind, in
// its timers stream.
func PendingTimers(workflow, kind string) string { return scheduleSubject(workflow, kind, "*") }

// firedSubject is where a schedule delivers; the events stream sources it.
func firedSubject(workflow, kind, key string) string {
	return contract.Namespace + ".timers." + workflow + ".fired." + kind + "." + key
}

// timerToken marks the subjects under which the events stream stores fired
// timers: orderly.events.<workflow>.<partition>.timer.<key>. Only the
// stream's source of the timers stream puts messages there, because the
// stream takes client publishes on orderly.events.<workflow>.* alone, one
// token after the workflow, and stores them with two. That, not a header,
// is what makes a message a timer.
const timerToken = "timer"

// isTimerSubject reports whether subject, stored in workflow's events
// stream, is a fired timer's.
func isTimerSubject(workflow, subject string) bool {
	rest, ok := strings.CutPrefix(subject, contract.Namespace+".events."+workflow+".")
	if !ok {
		return false
	}
	_, rest, _ = strings.Cut(rest, ".") // the partition
	key, ok := strings.CutPrefix(rest, timerToken+".")
	return ok && key != "" && !strings.Contains(key, ".")
}
