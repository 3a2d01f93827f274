package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/orderly-dev/orderly/internal/jsonx"
)

// The inventory: a workflow's keys by state, kept by the workers as
// transitions commit, so that counting the keys of a state or listing the
// oldest of them costs what the answer costs, not a scan of the state
// bucket. It is a stream (IndexStream) that keeps one message per subject:
//
//	orderly.index.<workflow>.state.<state>.<key>   the key is in <state> (IndexEntry)
//	orderly.index.<workflow>.work.<key>            the key has slow work pending (WorkEntry)
//
// A key has one state entry, written when it enters the state and left
// alone while it stays there (self-loops write nothing), so that the
// stream's order of a state's entries is the order in which its keys
// entered it. The number of keys in a state is the number of messages
// under IndexStateFilter(workflow, state).

// IndexStream is the stream of a workflow's inventory.
func IndexStream(workflow string) string { return "ORDERLY_INDEX_" + strings.ToUpper(workflow) }

// IndexSubject is the prefix of every subject of the inventory:
// orderly.index.<workflow>.
func IndexSubject(workflow string) string { return Namespace + ".index." + workflow }

// IndexStateSubject holds key's entry while it is in state:
// orderly.index.<workflow>.state.<state>.<key>.
func IndexStateSubject(workflow, state, key string) string {
	return IndexSubject(workflow) + ".state." + state + "." + key
}

// IndexStateFilter matches the entries of every key in state:
// orderly.index.<workflow>.state.<state>.*; "*" for state matches every
// state.
func IndexStateFilter(workflow, state string) string {
	return IndexStateSubject(workflow, state, "*")
}

// IndexKeyFilter matches key's state entries, whatever the state:
// orderly.index.<workflow>.state.*.<key>. A key has one, but for the moment
// a worker that dies in a commit leaves (see docs/operations.md).
func IndexKeyFilter(workflow, key string) string {
	return IndexStateSubject(workflow, "*", key)
}

// IndexWorkSubject holds key's work entry while it has slow work pending:
// orderly.index.<workflow>.work.<key>; "*" for key matches every key's.
func IndexWorkSubject(workflow, key string) string {
	return IndexSubject(workflow) + ".work." + key
}

// IndexEntry is a key's entry in the inventory under IndexStateSubject
// (docs/schemas/index.schema.json): the state the key is in, since when.
type IndexEntry struct {
	Workflow string `json:"workflow"` // The key's workflow.
	Key      string `json:"key"`      // The key.
	State    string `json:"state"`    // The state it is in.
	// Version is the key's version when it entered State (StateRecord's
	// Entered).
	Version uint64 `json:"version"`
	// Since is when it entered State: the time of the commit that moved it
	// there.
	Since time.Time `json:"since"`
}

// WorkEntry is a key's work entry under IndexWorkSubject
// (docs/schemas/index.schema.json): the key has had slow work pending,
// without a break, since Since. Action, JobID and Attempt are those of the
// work that began it; the key's state record says what is pending now.
type WorkEntry struct {
	Workflow string    `json:"workflow"` // The key's workflow.
	Key      string    `json:"key"`      // The key.
	Action   string    `json:"action"`   // The first action pending.
	JobID    string    `json:"job_id"`   // The job whose event started it.
	Attempt  int       `json:"attempt"`  // Its attempt when the entry was written.
	Since    time.Time `json:"since"`    // When the key's work began.
}

// MarshalIndexEntry returns the JSON of e, as json.Marshal does: the worker
// writes one per change of state.
func MarshalIndexEntry(e *IndexEntry) ([]byte, error) {
	b := make([]byte, 0, 112+len(e.Workflow)+len(e.Key)+len(e.State))
	b = append(b, `{"workflow":`...)
	b = jsonx.AppendString(b, e.Workflow)
	b = append(b, `,"key":`...)
	b = jsonx.AppendString(b, e.Key)
	b = append(b, `,"state":`...)
	b = jsonx.AppendString(b, e.State)
	b = append(b, `,"version":`...)
	b = strconv.AppendUint(b, e.Version, 10)
	b = append(b, `,"since":`...)
	b, ok := jsonx.AppendTime(b, e.Since)
	if !ok {
		return json.Marshal(e)
	}
	return append(b, '}'), nil
}

// DecodeIndexEntry decodes a state entry.
func DecodeIndexEntry(data []byte) (IndexEntry, error) {
	var e IndexEntry
	if err := json.Unmarshal(data, &e); err != nil {
		return IndexEntry{}, fmt.Errorf("index entry: %w", err)
	}
	return e, nil
}

// DecodeWorkEntry decodes a work entry.
func DecodeWorkEntry(data []byte) (WorkEntry, error) {
	var e WorkEntry
	if err := json.Unmarshal(data, &e); err != nil {
		return WorkEntry{}, fmt.Errorf("work entry: %w", err)
	}
	return e, nil
}

// MaxStateNameLen is the longest state name the contract allows.
const MaxStateNameLen = 64

// ErrInvalidStateName is returned for a state name that breaks the rule of
// ValidateStateName.
var ErrInvalidStateName = errors.New("invalid state name")

const stateNameRule = "a state name is 1-64 characters of A-Z a-z 0-9 - _"

// ValidateStateName checks a state name: 1-64 characters of A-Z a-z 0-9 -
// _, since it is a token of the inventory's subjects.
func ValidateStateName(name string) error {
	if name == "" || len(name) > MaxStateNameLen {
		return fmt.Errorf("%w: %q (%s)", ErrInvalidStateName, name, stateNameRule)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: %q contains %q (%s)", ErrInvalidStateName, name, c, stateNameRule)
		}
	}
	return nil
}

// WorkflowsBucket is the KV bucket where every worker describes the
// workflows it runs, one entry per workflow (key: its name, value:
// WorkflowInfo), written at start-up: how inspectors (enqueue stats, the
// web console) learn a workflow's states.
const WorkflowsBucket = "orderly_workflows"

// WorkflowInfo describes a workflow as its workers run it
// (docs/schemas/workflow.schema.json).
type WorkflowInfo struct {
	Name    string          `json:"name"`    // The workflow's name.
	Initial string          `json:"initial"` // The state of a key no event has moved yet.
	States  []WorkflowState `json:"states"`  // Every state, in definition order.
	Events  []WorkflowEvent `json:"events"`  // Every event, in definition order.
	Actions []string        `json:"actions"` // The slow work transitions may start.
	// Mermaid is the state diagram (a Mermaid stateDiagram-v2), generated
	// from the definition.
	Mermaid string `json:"mermaid"`
	// Inventory says whether the workers keep the inventory (IndexStream);
	// when false, counts and lists by state are not kept.
	Inventory bool `json:"inventory"`
}

// WorkflowState is one state of a WorkflowInfo.
type WorkflowState struct {
	Name     string `json:"name"`               // The state's name.
	Terminal bool   `json:"terminal,omitempty"` // No event is accepted once here.
}

// WorkflowEvent is one event of a WorkflowInfo.
type WorkflowEvent struct {
	Name   string `json:"name"`             // The event's name.
	Client bool   `json:"client,omitempty"` // Clients may send it; otherwise it is internal.
}

// HasState reports whether the workflow has a state called name.
func (w *WorkflowInfo) HasState(name string) bool {
	for _, s := range w.States {
		if s.Name == name {
			return true
		}
	}
	return false
}

// StateNames lists the workflow's states, in definition order.
func (w *WorkflowInfo) StateNames() []string {
	names := make([]string, len(w.States))
	for i, s := range w.States {
		names[i] = s.Name
	}
	return names
}
