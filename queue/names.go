package queue

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// MaxKeyLen is the longest key the contract allows.
const MaxKeyLen = 128

// ErrInvalidKey is returned for a key that breaks the contract's rule; the
// error's text names the rule.
var ErrInvalidKey = errors.New("invalid key")

// ErrInvalidWorkflow is returned for a workflow name that is not a safe subject token.
var ErrInvalidWorkflow = errors.New("invalid workflow name")

const keyRule = "a key is 1-128 characters of A-Z a-z 0-9 - _ ="

// ValidateKey checks key against the contract: 1-128 characters of
// A-Z a-z 0-9 - _ =, safe both as a subject token and as a KV key.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty (%s)", ErrInvalidKey, keyRule)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: %d characters is too long (%s)", ErrInvalidKey, len(key), keyRule)
	}
	for i := 0; i < len(key); i++ {
		if !keyByte(key[i]) {
			return fmt.Errorf("%w: %q contains %q at position %d (%s)", ErrInvalidKey, key, key[i], i, keyRule)
		}
	}
	return nil
}

func keyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '='
}

// ValidateWorkflow checks a workflow name: 1-64 characters of a-z 0-9 - _.
func ValidateWorkflow(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w: %q must be 1-64 characters of a-z 0-9 - _", ErrInvalidWorkflow, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: %q must be 1-64 characters of a-z 0-9 - _", ErrInvalidWorkflow, name)
		}
	}
	return nil
}

const ns = "orderly"

// EventSubject is where producers publish events for key: orderly.events.<workflow>.<key>.
func EventSubject(workflow, key string) string { return ns + ".events." + workflow + "." + key }

// StatusSubject is where status changes of key are published: orderly.status.<workflow>.<key>.
// An empty key gives the wildcard subject for the whole workflow.
func StatusSubject(workflow, key string) string {
	if key == "" {
		key = "*"
	}
	return ns + ".status." + workflow + "." + key
}

// DeadLetterSubject is where dead letters of key are stored.
func DeadLetterSubject(workflow, key string) string { return ns + ".dlq." + workflow + "." + key }

// PartitionOf returns the partition of partitions that key's events (and
// fired timers) go to: what the events stream's subject transform
// {{partition(n,1)}} computes, the FNV-1a 32-bit hash of the key modulo n.
func PartitionOf(key string, partitions int) int {
	if partitions <= 0 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(partitions))
}

// partitionSubject covers a partition's events and fired timers: one
// filter, so JetStream delivers both in stream order (and as fast as one
// filter goes; several filters on a consumer are much slower to serve).
func partitionSubject(workflow string, partition int) string {
	return ns + ".events." + workflow + "." + strconv.Itoa(partition) + ".>"
}

func streamName(workflow string) string    { return "ORDERLY_EVENTS_" + strings.ToUpper(workflow) }
func dlqStreamName(workflow string) string { return "ORDERLY_DLQ_" + strings.ToUpper(workflow) }
func bucketName(workflow string) string    { return "orderly_state_" + workflow }
func consumerName(workflow string, p int) string {
	return "orderly_" + workflow + "_p" + strconv.Itoa(p)
}

// keyFromSubject returns the last token of a subject: the key, in every
// subject Orderly uses.
func keyFromSubject(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}

func timersStreamName(workflow string) string {
	return "ORDERLY_TIMERS_" + strings.ToUpper(workflow)
}

// scheduleSubject holds the pending schedule of one kind for key.
func scheduleSubject(workflow, kind, key string) string {
	return ns + ".timers." + workflow + "." + kind + "." + key
}

// firedSubject is where a schedule delivers; the events stream sources it.
func firedSubject(workflow, kind, key string) string {
	return ns + ".timers." + workflow + ".fired." + kind + "." + key
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
	rest, ok := strings.CutPrefix(subject, ns+".events."+workflow+".")
	if !ok {
		return false
	}
	_, rest, _ = strings.Cut(rest, ".") // the partition
	key, ok := strings.CutPrefix(rest, timerToken+".")
	return ok && key != "" && !strings.Contains(key, ".")
}

func membersBucketName(workflow string) string { return "orderly_members_" + workflow }
