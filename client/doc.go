// Package client is how a Go service uses Orderly: it sends events to a
// workflow's keys and looks at what became of them. It is the producer and
// inspector side only; the worker runtime lives in package worker.
//
// Make a Client from a connection you already have, which stays yours:
//
//	nc, _ := nats.Connect(url)            // your connection, your options
//	c, _ := client.New(nc, client.Config{})
//	defer c.Close()                       // leaves nc open
//
// or let it connect, and own the connection:
//
//	c, _ := client.Connect(url, client.Config{}, nats.UserInfo("svc", pw))
//	defer c.Close()                       // closes the connection too
//
// Then:
//
//   - Publish stores an event (contract.Envelope) for a key and returns once
//     JetStream has stored it; WithJobID sets its idempotency key.
//     PublishAsync pipelines many.
//   - PublishAndWait publishes and follows the job's statuses until it
//     settles, without missing a status that comes first.
//   - State reads a key's stored state; Watch and Subscribe deliver status
//     changes as they happen; History reads a key's stored statuses, and
//     Watch with WatchAll or WatchSince replays them before it follows new
//     ones; Job says which event holds a job id.
//   - DeadLetters lists the events the worker could never process, Replay
//     and ReplayAll send them again.
//
// An event carries the W3C trace context of the caller's span (from the
// context of Publish), so a worker that traces continues the caller's
// trace; with Config.TracerProvider the client adds a span of its own per
// publish (docs/operations.md, Tracing).
//
// Errors are wrapped with a "client:" prefix; test them with errors.Is and
// errors.As: ErrQueueFull, ErrPayloadTooLarge, ErrNotProvisioned,
// ErrInvalidEvent, ErrIDConflict (*IDConflictError), ErrNoState, ErrNoJob,
// ErrNoDeadLetter, ErrNoHistory, ErrInvalidWatch, ErrWaitTimeout, ErrClosed,
// and the contract's
// contract.ErrInvalidKey, contract.ErrInvalidWorkflow and
// contract.ErrInvalidJobID, which are returned before anything reaches the
// server.
//
// The subjects, headers and JSON the client uses are the wire contract of
// package contract (docs/contract.md); a service in another language can do
// the same with any NATS client.
package client
