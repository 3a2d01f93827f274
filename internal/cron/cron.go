// Package cron reads the schedules of JetStream message schedules (the
// Nats-Schedule header) as nats-server 2.15 reads them: "@at <RFC 3339>",
// "@every <duration>", the predefined "@yearly" ... "@hourly", and cron
// expressions of six fields (second minute hour day-of-month month
// day-of-week) in a time zone.
//
// Orderly validates a schedule before it stores anything, and computes
// fire times (the next one for "enqueue schedule list", the one a firing
// was for to derive its job id), so it must agree with the server to the
// letter. The rules here are a port of the server's server/cron.go and
// parseMsgSchedule in server/scheduler.go (nats-server v2.15.2, Apache 2.0;
// its cron parser is in turn based on github.com/robfig/cron, MIT,
// Copyright (C) 2012 Rob Figueiredo), quirks included: "*-5" means "*",
// "1,,2" means "1,2", and a pattern that matches no time within five years
// (30 February) is refused. TestServerAgrees checks a table of patterns
// against a real server.
package cron

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid is wrapped by every error of Parse and Pattern.
var ErrInvalid = errors.New("invalid schedule")

// Schedule is a parsed cron expression in a time zone.
type Schedule struct {
	second, minute, hour, dom, month, dow uint64
	loc                                   *time.Location
}

// predefined are the server's names for common cron expressions.
var predefined = map[string]string{
	"@yearly":   "0 0 0 1 1 *",
	"@annually": "0 0 0 1 1 *",
	"@monthly":  "0 0 0 1 * *",
	"@weekly":   "0 0 0 * * 0",
	"@daily":    "0 0 0 * * *",
	"@midnight": "0 0 0 * * *",
	"@hourly":   "0 0 * * * *",
}

// Parse parses a cron expression (or a predefined name such as "@daily")
// for the zone loc (nil: UTC). It checks the fields only; Pattern also
// checks that the expression fires within the server's five years.
func Parse(expr string, loc *time.Location) (*Schedule, error) {
	if p, ok := predefined[expr]; ok {
		expr = p
	}
	fields := strings.Fields(expr)
	if len(fields) != 6 {
		return nil, fmt.Errorf("%w: cron expression %q has %d fields, want 6: second minute hour day-of-month month day-of-week (e.g. \"0 */5 * * * *\"), or the classic 5 of crontab, minute first", ErrInvalid, expr, len(fields))
	}
	if loc == nil {
		loc = time.UTC
	}
	s := &Schedule{loc: loc}
	for i, f := range []struct {
		dst  *uint64
		b    bounds
		name string
	}{
		{&s.second, seconds, "second"}, {&s.minute, minutes, "minute"}, {&s.hour, hours, "hour"},
		{&s.dom, doms, "day-of-month"}, {&s.month, months, "month"}, {&s.dow, dows, "day-of-week"},
	} {
		bits, err := field(fields[i], f.b)
		if err != nil {
			return nil, fmt.Errorf("%w: cron expression %q, %s field %q: %v", ErrInvalid, expr, f.name, fields[i], err)
		}
		*f.dst = bits
	}
	return s, nil
}

// Expand returns a classic cron expression of five fields (minute hour
// day-of-month month day-of-week: crontab's, asynq's and River's, which
// users bring) as the server reads it, with a second of 0 in front, and
// any other expression as it is.
func Expand(expr string) string {
	if f := strings.Fields(expr); len(f) == 5 {
		return "0 " + strings.Join(f, " ")
	}
	return expr
}

// maxYears: the server gives up on a pattern that matches nothing within
// five years.
const maxYears = 5

// Next returns the first time the schedule fires strictly after t, at a
// whole second, as the server computes it; an error if there is none
// within five years.
func (s *Schedule) Next(t time.Time) (time.Time, error) {
	loc := s.loc
	next := t.In(loc).Truncate(time.Second).Add(time.Second)
	truncated := false
	yearLimit := next.Year() + maxYears

	// For each field from the month down: while it does not match,
	// advance it (zeroing the smaller ones the first time); a wrap-around
	// of one starts over from the month, as the server does.
WRAP:
	if next.Year() > yearLimit {
		return time.Time{}, fmt.Errorf("%w: the cron expression matches no time within %d years", ErrInvalid, maxYears)
	}
	for 1<<uint(next.Month())&s.month == 0 {
		if !truncated {
			truncated = true
			next = time.Date(next.Year(), next.Month(), 1, 0, 0, 0, 0, loc)
		}
		if next = next.AddDate(0, 1, 0); next.Month() == time.January {
			goto WRAP
		}
	}
	for !s.dayMatches(next) {
		if !truncated {
			truncated = true
			next = time.Date(next.Year(), next.Month(), next.Day(), 0, 0, 0, 0, loc)
		}
		if next = next.AddDate(0, 0, 1); next.Day() == 1 {
			goto WRAP
		}
	}
	for 1<<uint(next.Hour())&s.hour == 0 {
		if !truncated {
			truncated = true
			next = time.Date(next.Year(), next.Month(), next.Day(), next.Hour(), 0, 0, 0, loc)
		}
		if next = next.Add(time.Hour); next.Hour() == 0 {
			goto WRAP
		}
	}
	for 1<<uint(next.Minute())&s.minute == 0 {
		if !truncated {
			truncated = true
			next = next.Truncate(time.Minute)
		}
		if next = next.Add(time.Minute); next.Minute() == 0 {
			goto WRAP
		}
	}
	for 1<<uint(next.Second())&s.second == 0 {
		if !truncated {
			truncated = true
			next = next.Truncate(time.Second)
		}
		if next = next.Add(time.Second); next.Second() == 0 {
			goto WRAP
		}
	}
	return next, nil
}

// Prev returns the last time the schedule fires at or before t (within
// five years and a day); false if there is none. The server has no such
// function: it is found from Next, by bisection over whole seconds, since
// Next never decreases as its argument grows.
func (s *Schedule) Prev(t time.Time) (time.Time, bool) {
	t = t.Truncate(time.Second)
	lo := t.AddDate(-maxYears, 0, -1)
	first, err := s.Next(lo.Add(-time.Second))
	if err != nil || first.After(t) {
		return time.Time{}, false
	}
	// Invariant: Next(lo-1s) <= t. Find the largest such lo.
	hi := t
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2).Truncate(time.Second)
		if n, err := s.Next(mid.Add(-time.Second)); err == nil && !n.After(t) {
			lo = mid
		} else {
			hi = mid
		}
	}
	if n, err := s.Next(hi.Add(-time.Second)); err == nil && !n.After(t) {
		return n, true
	}
	n, _ := s.Next(lo.Add(-time.Second))
	return n, true
}

func (s *Schedule) dayMatches(t time.Time) bool {
	domMatch := 1<<uint(t.Day())&s.dom > 0
	dowMatch := 1<<uint(t.Weekday())&s.dow > 0
	if s.dom&starBit > 0 || s.dow&starBit > 0 {
		return domMatch && dowMatch
	}
	return domMatch || dowMatch
}

// Kind of a schedule pattern.
type Kind int

const (
	At    Kind = iota + 1 // "@at <RFC 3339>": once
	Every                 // "@every <duration>": repeating on an interval
	Cron                  // a cron expression or predefined name: repeating
)

// Spec is a parsed Nats-Schedule pattern.
type Spec struct {
	Kind  Kind
	At    time.Time     // Kind At
	Every time.Duration // Kind Every
	Cron  *Schedule     // Kind Cron
}

// Pattern parses a Nats-Schedule pattern with its time zone (zone "":
// none, as when the Nats-Schedule-Time-Zone header is absent) and checks it
// as the server checks it when it stores a schedule at time now: a time
// zone only for cron, "@every" at least a second, a cron expression that
// fires within five years. It returns the first fire time after now too.
func Pattern(pattern, zone string, now time.Time) (Spec, time.Time, error) {
	var loc *time.Location
	if zone != "" {
		l, err := LoadZone(zone)
		if err != nil {
			return Spec{}, time.Time{}, err
		}
		loc = l
	}
	switch {
	case pattern == "":
		return Spec{}, time.Time{}, fmt.Errorf("%w: empty schedule", ErrInvalid)
	case strings.HasPrefix(pattern, "@at "):
		if loc != nil {
			return Spec{}, time.Time{}, fmt.Errorf("%w: a time zone applies only to cron expressions", ErrInvalid)
		}
		t, err := time.Parse(time.RFC3339, pattern[4:])
		if err != nil {
			return Spec{}, time.Time{}, fmt.Errorf("%w: %q: %v", ErrInvalid, pattern, err)
		}
		return Spec{Kind: At, At: t}, t, nil
	case strings.HasPrefix(pattern, "@every "):
		if loc != nil {
			return Spec{}, time.Time{}, fmt.Errorf("%w: a time zone applies only to cron expressions", ErrInvalid)
		}
		d, err := time.ParseDuration(pattern[7:])
		if err != nil {
			return Spec{}, time.Time{}, fmt.Errorf("%w: %q: %v", ErrInvalid, pattern, err)
		}
		if d < time.Second {
			return Spec{}, time.Time{}, fmt.Errorf("%w: every %s: the interval must be at least 1s", ErrInvalid, d)
		}
		return Spec{Kind: Every, Every: d}, EveryNext(d, now, now), nil
	}
	s, err := Parse(pattern, loc)
	if err != nil {
		return Spec{}, time.Time{}, err
	}
	next, err := s.Next(now)
	if err != nil {
		return Spec{}, time.Time{}, fmt.Errorf("%w: cron expression %q matches no time within %d years", ErrInvalid, pattern, maxYears)
	}
	return Spec{Kind: Cron, Cron: s}, next, nil
}

// EveryNext is when an "@every d" schedule fires next after it last fired
// (or was stored) at last, at time now: the server's rule, which skips
// what was missed (a server that was down) and fires once.
func EveryNext(d time.Duration, last, now time.Time) time.Time {
	next := last.UTC().Round(time.Second).Add(d)
	if n := now.UTC(); next.Before(n) {
		next = n.Round(time.Second).Add(d)
	}
	return next
}

// LoadZone loads a time zone by its IANA name, as the server does, but
// refuses what the server would read differently from this process: "" and
// "Local" (the server's own zone, not the caller's).
func LoadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("%w: time zone %q: give an IANA zone name such as Europe/Berlin or UTC", ErrInvalid, name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%w: unknown time zone %q (want an IANA name such as Europe/Berlin or UTC)", ErrInvalid, name)
	}
	return loc, nil
}

// field returns the bits of a comma-separated list of ranges.
func field(f string, b bounds) (uint64, error) {
	var bits uint64
	for expr := range strings.FieldsFuncSeq(f, func(r rune) bool { return r == ',' }) {
		bit, err := rangeBits(expr, b)
		if err != nil {
			return 0, err
		}
		bits |= bit
	}
	return bits, nil
}

// rangeBits returns the bits of number | number "-" number, optionally
// followed by "/" step; "*" and "?" mean the whole range.
func rangeBits(expr string, b bounds) (uint64, error) {
	var (
		start, end, step uint
		rangeAndStep     = strings.Split(expr, "/")
		lowAndHigh       = strings.Split(rangeAndStep[0], "-")
		single           = len(lowAndHigh) == 1
		extra            uint64
		err              error
	)
	if lowAndHigh[0] == "*" || lowAndHigh[0] == "?" {
		start, end, extra = b.min, b.max, starBit
	} else {
		if start, err = intOrName(lowAndHigh[0], b.names); err != nil {
			return 0, err
		}
		switch len(lowAndHigh) {
		case 1:
			end = start
		case 2:
			if end, err = intOrName(lowAndHigh[1], b.names); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("too many hyphens: %s", expr)
		}
	}
	switch len(rangeAndStep) {
	case 1:
		step = 1
	case 2:
		if step, err = parseUint(rangeAndStep[1]); err != nil {
			return 0, err
		}
		if single { // "N/step" means "N-max/step"
			end = b.max
		}
		if step > 1 {
			extra = 0
		}
	default:
		return 0, fmt.Errorf("too many slashes: %s", expr)
	}
	switch {
	case start < b.min:
		return 0, fmt.Errorf("beginning of range (%d) below minimum (%d): %s", start, b.min, expr)
	case end > b.max:
		return 0, fmt.Errorf("end of range (%d) above maximum (%d): %s", end, b.max, expr)
	case start > end:
		return 0, fmt.Errorf("beginning of range (%d) beyond end of range (%d): %s", start, end, expr)
	case step == 0:
		return 0, fmt.Errorf("step of range should be a positive number: %s", expr)
	}
	return bitsOf(start, end, step) | extra, nil
}

func intOrName(expr string, names map[string]uint) (uint, error) {
	if n, ok := names[strings.ToLower(expr)]; ok {
		return n, nil
	}
	return parseUint(expr)
}

func parseUint(expr string) (uint, error) {
	n, err := strconv.Atoi(expr)
	if err != nil {
		return 0, fmt.Errorf("failed to parse int from %s: %v", expr, err)
	}
	if n < 0 {
		return 0, fmt.Errorf("negative number (%d) not allowed: %s", n, expr)
	}
	return uint(n), nil
}

func bitsOf(lo, hi, step uint) uint64 {
	if step == 1 {
		return ^(math.MaxUint64 << (hi + 1)) & (math.MaxUint64 << lo)
	}
	var bits uint64
	for i := lo; i <= hi; i += step {
		bits |= 1 << i
	}
	return bits
}

type bounds struct {
	min, max uint
	names    map[string]uint
}

var (
	seconds = bounds{0, 59, nil}
	minutes = bounds{0, 59, nil}
	hours   = bounds{0, 23, nil}
	doms    = bounds{1, 31, nil}
	months  = bounds{1, 12, map[string]uint{
		"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
		"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
	}}
	dows = bounds{0, 6, map[string]uint{
		"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
	}}
)

// starBit marks a field given as "*" (or "?"): day-of-month and
// day-of-week combine with AND when either is a star, OR otherwise.
const starBit = 1 << 63
