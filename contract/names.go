package contract

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
)

// MaxKeyLen is the longest key the contract allows.
const MaxKeyLen = 128

// MaxWorkflowLen is the longest workflow name the contract allows: stream
// and bucket names are built from it.
const MaxWorkflowLen = 64

// ErrInvalidKey is returned for a key that breaks the contract's rule; the
// error's text names the rule.
var ErrInvalidKey = errors.New("invalid key")

// ErrInvalidWorkflow is returned for a workflow name that breaks the
// contract's rule.
var ErrInvalidWorkflow = errors.New("invalid workflow name")

const (
	keyRule      = "a key is 1-128 characters of A-Z a-z 0-9 - _ ="
	workflowRule = "must be 1-64 characters of a-z 0-9 - _"
)

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
	if name == "" || len(name) > MaxWorkflowLen {
		return fmt.Errorf("%w: %q %s", ErrInvalidWorkflow, name, workflowRule)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: %q %s", ErrInvalidWorkflow, name, workflowRule)
		}
	}
	return nil
}

// Namespace is the first token of every subject Orderly uses.
const Namespace = "orderly"

// EventSubject is where producers publish events for key:
// orderly.events.<workflow>.<key>.
func EventSubject(workflow, key string) string {
	return Namespace + ".events." + workflow + "." + key
}

// StatusSubject is where status changes of key are published:
// orderly.status.<workflow>.<key>. An empty key gives the wildcard subject
// of the whole workflow.
func StatusSubject(workflow, key string) string {
	if key == "" {
		key = "*"
	}
	return Namespace + ".status." + workflow + "." + key
}

// DeadLetterSubject is where dead letters of key are stored:
// orderly.dlq.<workflow>.<key>.
func DeadLetterSubject(workflow, key string) string {
	return Namespace + ".dlq." + workflow + "." + key
}

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

// PartitionSubject is the filter of one partition's stored events and fired
// timers: orderly.events.<workflow>.<partition>.>.
func PartitionSubject(workflow string, partition int) string {
	return Namespace + ".events." + workflow + "." + strconv.Itoa(partition) + ".>"
}

// KeyOfSubject returns the last token of a subject: the key, in every
// subject Orderly uses.
func KeyOfSubject(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}

// Storage names of a workflow: what an operator sees in `nats stream ls` and
// `nats kv ls`.
func EventsStream(workflow string) string     { return "ORDERLY_EVENTS_" + strings.ToUpper(workflow) }
func DeadLetterStream(workflow string) string { return "ORDERLY_DLQ_" + strings.ToUpper(workflow) }
func TimersStream(workflow string) string     { return "ORDERLY_TIMERS_" + strings.ToUpper(workflow) }
func StateBucket(workflow string) string      { return "orderly_state_" + workflow }
func JobsBucket(workflow string) string       { return "orderly_jobs_" + workflow }
func MembersBucket(workflow string) string    { return "orderly_members_" + workflow }

// HistoryStream stores the workflow's statuses (its status subjects
// orderly.status.<workflow>.*) as they are published, the newest of each key
// kept up to a count and an age: what a watcher replays, and a key's
// history.
func HistoryStream(workflow string) string { return "ORDERLY_HISTORY_" + strings.ToUpper(workflow) }
