// Package orderlytest tests Orderly workflows the way they run in
// production: on a real worker, against a real nats-server, through the
// public API only. It is to Orderly what rivertest is to river.
//
// Start runs an embedded nats-server with its store in t.TempDir(), a
// producer connection and a worker running the workflows under test, and
// stops all of it when the test ends. The returned Harness drives the
// workflow and checks what it did:
//
//	h := orderlytest.Start(t, []worker.Workflow{wf})
//	h.Send("doc-1", "submit", review.Submission{Title: "Q3 report"})
//	h.RequireState("doc-1", review.InReview)
//	job := h.Send("doc-1", "submit", nil)
//	h.RequireRejected(job, "invalid_transition")
//
// Slow work is injected the usual way, as the actions given to
// worker.NewWorkflow; wrap one in a Spy to see how it was called:
//
//	spy := orderlytest.NewSpy(notify)
//	wf, _ := worker.NewWorkflow(m, map[string]worker.ActionFunc[Doc]{"notify": spy.Func})
//	...
//	calls := spy.RequireCalled(t, 1)
//
// Per-state timeouts need no real waiting. The worker's clock is the
// harness's Clock, and Advance moves it on and has every timer due by then
// fire within about a second of real time (queue.Conn.FireDueTimers), so a
// 48-hour timeout is tested in a second:
//
//	h.Advance(49 * time.Hour)
//	h.RequireState("doc-1", review.Escalated)
//
// Periodic events (statemachine.Every) likewise: each Advance fires, at
// once, one tick of every periodic event with a tick due within the time it
// skipped, so a reminder every 5 minutes is tested with h.Advance(5 *
// time.Minute) per reminder. Delayed events (client.WithDelay) due by then
// fire within about a second, and every firing of a recurring schedule
// (client.Client.AddSchedule) that falls within the time skipped fires at
// once, with the job id the server's firing would have. What only the
// real clock shows (the broker's
// own cadence, whole-second rounding, ticks missed while no worker ran)
// needs short real intervals, as the worker's own tests use.
//
// Every wait is on an event (a status, a call) and bounded by the harness's
// timeout (DefaultTimeout, or WithTimeout); a failure says what was seen
// instead. Harnesses share nothing, so tests using them can run with
// t.Parallel.
package orderlytest
