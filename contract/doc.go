// Package contract is Orderly's wire contract, in one place: the subjects and
// storage names, the event envelope, the status, the state record, the error
// codes, and the rules for keys and workflow names. Producers written in other
// languages read docs/contract.md and the JSON Schemas in docs/schemas, which
// describe the same values; a test validates messages produced by a running
// worker against those schemas.
//
// The package is pure: no I/O, no NATS client. The runtime (worker, queue),
// the producer client (client) and the command-line tools all take their names
// from here.
//
// Subjects (namespace "orderly"):
//
//	orderly.events.<workflow>.<key>                    what producers publish to
//	orderly.events.<workflow>.<partition>.<key>        what the events stream stores (subject transform)
//	orderly.events.<workflow>.<partition>.timer.<key>  fired timers, as the events stream stores them
//	orderly.status.<workflow>.<key>                    status changes (pub/sub)
//	orderly.dlq.<workflow>.<key>                       dead letters
//
// A key is 1-128 characters of A-Z a-z 0-9 - _ = so that it is safe both as a
// subject token and as a KV key; a workflow name is 1-64 characters of
// a-z 0-9 - _. ValidateKey and ValidateWorkflow refuse anything else before
// it reaches the broker.
package contract
