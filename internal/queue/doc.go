// Package queue is Orderly's only door to NATS JetStream.
//
// It connects (server list, user/password, token, NKey, credentials file, TLS),
// provisions a workflow's streams, consumers and state bucket idempotently,
// publishes events with idempotency keys, pulls them in bounded batches,
// publishes and subscribes to status changes, and reads and writes each key's
// state with compare-and-set. It knows nothing of state machines: the worker
// package gives the bytes their meaning.
//
// Subjects (contract v1, namespace "orderly"):
//
//	orderly.events.<workflow>.<key>              what producers publish to
//	orderly.events.<workflow>.<partition>.<key>  what the stream stores (subject transform)
//	orderly.events.<workflow>.<partition>.timer.<key>  fired timers, as the stream stores them
//	orderly.status.<workflow>.<key>              status changes (core NATS pub/sub)
//	orderly.dlq.<workflow>.<key>                 dead letters
//
// A key is 1-128 characters of A-Z a-z 0-9 - _ = so that it is safe both as a
// subject token and as a KV key; ValidateKey refuses anything else before it
// reaches the broker.
package queue
