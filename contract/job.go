package contract

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Job ids are idempotency keys (HeaderJobID). Before it applies an event,
// a worker claims the event's job id in the workflow's job bucket
// (JobsBucket, one entry per id under JobKey(id), kept for the dedupe
// window): only the event that created the claim, or a redelivery of that
// same event, is applied. Producers read the claims to refuse a reused id
// before publishing. An id its producer made for one publish
// (HeaderJobMade) is not claimed: no other event carries it.

// MaxJobIDLen is the longest job id, in bytes.
const MaxJobIDLen = 256

// ErrInvalidJobID is returned for a job id that breaks the rule of
// ValidateJobID; the error's text names the rule.
var ErrInvalidJobID = errors.New("invalid job id")

const jobIDRule = "a job id is 1-256 bytes of UTF-8 without control characters or leading or trailing spaces"

// ValidateJobID checks a job id given by a producer: 1-256 bytes of UTF-8,
// no control characters (they would break the message header that carries
// it), no leading or trailing spaces (a header would lose them).
func ValidateJobID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty (%s)", ErrInvalidJobID, jobIDRule)
	case len(id) > MaxJobIDLen:
		return fmt.Errorf("%w: %d bytes is too long (%s)", ErrInvalidJobID, len(id), jobIDRule)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: %q is not UTF-8 (%s)", ErrInvalidJobID, id, jobIDRule)
	case strings.TrimSpace(id) != id:
		return fmt.Errorf("%w: %q has leading or trailing spaces (%s)", ErrInvalidJobID, id, jobIDRule)
	}
	for i, r := range id {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: %q contains a control character at byte %d (%s)", ErrInvalidJobID, id, i, jobIDRule)
		}
	}
	return nil
}

// Job is the claim of a job id, as the job bucket stores it under
// JobKey(ID): the event that took the id first.
type Job struct {
	ID       string    `json:"-"`     // The job id (the bucket key says it).
	Key      string    `json:"key"`   // The key of the event that took it.
	Event    string    `json:"event"` // The name of the event that took it.
	Sequence uint64    `json:"seq"`   // That event's sequence in the events stream.
	At       time.Time `json:"at"`    // When a worker took it.
}

// ClaimOutcome is what the claim holding a job id means for an event that
// carries the id.
type ClaimOutcome int

const (
	// Claimed: the claim is the event's own (same sequence): apply it.
	Claimed ClaimOutcome = iota
	// Duplicate: another event of the same key and event name holds the
	// id. It is not applied again (status code CodeDuplicate).
	Duplicate
	// Conflict: an event of another key or event name holds the id. It is
	// refused (CodeIDConflict).
	Conflict
)

// Outcome says what j, the claim holding a job id, means for the event of
// key and event stored at sequence seq (0: not stored) that carries the id.
func (j Job) Outcome(key, event string, seq uint64) ClaimOutcome {
	switch {
	case seq != 0 && j.Sequence == seq:
		return Claimed
	case j.Key == key && j.Event == event:
		return Duplicate
	default:
		return Conflict
	}
}

// JobKey is the job bucket's key of a job id: the id itself when it is a
// safe KV key of up to 128 characters of A-Z a-z 0-9 - _, or else "=" and
// the unpadded base64url SHA-256 of the id. The two forms cannot collide:
// "=" is not among the characters the first may hold.
func JobKey(id string) string {
	if len(id) > 0 && len(id) <= 128 {
		ok := true
		for i := 0; i < len(id) && ok; i++ {
			c := id[i]
			ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		}
		if ok {
			return id
		}
	}
	sum := sha256.Sum256([]byte(id))
	return "=" + base64.RawURLEncoding.EncodeToString(sum[:])
}
