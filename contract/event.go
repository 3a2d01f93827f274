package contract

import "encoding/json"

// Envelope is the JSON body of an event message:
// {"event": "<name>", "data": {...}}, data optional. No other field is
// accepted: a body with an unknown or repeated field is dead-lettered as
// malformed (CodeMalformed).
type Envelope struct {
	Event string          `json:"event"`          // The event's name.
	Data  json.RawMessage `json:"data,omitempty"` // The event's payload, any JSON; optional.
}

// Headers of an event message.
const (
	// HeaderJobID is the job id and idempotency key of an event: at most
	// one event per job id is applied per workflow within the dedupe window.
	HeaderJobID = "Nats-Msg-Id"
	// HeaderJobMade, set to "true", says the producer made the event's job
	// id itself for this one publish and will never send it again (package
	// client does so when no id is given): a claim could only ever find
	// the event's own, so the worker claims none, and the id is refused
	// again only within the events stream's duplicate window. A producer
	// that sets it on an id it reuses gives up that id's guarantee, for its
	// own events alone. Ignored on delayed and recurring events, which are
	// always claimed.
	HeaderJobMade = "Orderly-Job-Made"
	// HeaderTimerKind names a fired timer's kind (TimerTimeout, TimerResume).
	HeaderTimerKind = "Orderly-Timer-Kind"
	// HeaderTimerVisit tags a fired timer with the state version that armed
	// it; one armed in an earlier visit of the state is ignored.
	HeaderTimerVisit = "Orderly-Timer-Visit"
)

// Headers of W3C trace context (https://www.w3.org/TR/trace-context/), on an
// event and on what follows from it: the timers and dead letters of its key,
// and a delayed event's schedule. Optional: a producer that traces sets them
// (the client does from its caller's context), and a worker that traces
// continues the trace from them. The names are the W3C's, lower case, as
// NATS headers are case-sensitive.
const (
	// HeaderTraceParent is the trace and the span an event continues:
	// "00-<trace id>-<parent span id>-<flags>".
	HeaderTraceParent = "traceparent"
	// HeaderTraceState is the vendors' part of the trace context, passed on
	// as it came.
	HeaderTraceState = "tracestate"
)

// Headers of a dead letter: why and where from.
const (
	HeaderDLQReason    = "Orderly-Dlq-Reason"    // "<code>: <message>"
	HeaderDLQSubject   = "Orderly-Dlq-Subject"   // the subject the event was stored under
	HeaderDLQSequence  = "Orderly-Dlq-Sequence"  // its sequence in the events stream
	HeaderDLQDelivered = "Orderly-Dlq-Delivered" // how many times it was delivered
	HeaderDLQAt        = "Orderly-Dlq-At"        // when it was dead-lettered (RFC 3339)
	HeaderDLQJobID     = "Orderly-Dlq-Job-Id"    // its job id
)

// Timer kinds: the durable wake-ups the runtime arms for a key.
const (
	// TimerTimeout fires a state's timeout event.
	TimerTimeout = "timeout"
	// TimerResume wakes a key whose slow work may have been cut off, so a
	// worker resumes it.
	TimerResume = "resume"
)

// ResumeEvent is the event a TimerResume timer delivers. Names starting
// with "$" are reserved for the runtime; a workflow cannot declare them.
const ResumeEvent = "$resume"
