package contract

import (
	"strconv"
	"strings"
)

// Periodic events (statemachine.Every) are JetStream message schedules too,
// "Nats-Schedule: @every <interval>", one per periodic event of the key's
// state: orderly.timers.<workflow>.every<slot>.<key>, slot being the event's
// place in its state's list. They carry HeaderTimerKind (TimerEvery(slot)),
// HeaderTimerVisit (the version at which the key entered the state) and
// HeaderTimerArmed; each tick they fire carries the same.

// HeaderTimerArmed is when a periodic schedule was armed, by the clock of
// the worker that armed it (RFC 3339 with nanoseconds): the cadence's
// anchor, which a test clock (orderlytest) reads to fire the ticks it has
// made due.
const HeaderTimerArmed = "Orderly-Timer-Armed"

// timerEvery is the prefix of the timer kinds of periodic events.
const timerEvery = "every"

// TimerEvery is the timer kind of the periodic event at slot in its state's
// list: "every0", "every1", ...
func TimerEvery(slot int) string { return timerEvery + strconv.Itoa(slot) }

// EverySlot returns the slot of a periodic event's timer kind, and false for
// any other kind.
func EverySlot(kind string) (int, bool) {
	rest, ok := strings.CutPrefix(kind, timerEvery)
	if !ok || rest == "" || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	slot, err := strconv.Atoi(rest)
	if err != nil || slot < 0 || strconv.Itoa(slot) != rest {
		return 0, false
	}
	return slot, true
}
