package contract_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/orderly-dev/orderly/contract"
)

func TestIdempotencyKeyValidation(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"job-1", "a.b c", "ünïcode", strings.Repeat("x", contract.MaxJobIDLen)} {
		if err := contract.ValidateJobID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, id := range []string{"", "a\nb", "a\x00", "tab\there", " lead", "trail ", "\xff\xfe", strings.Repeat("x", contract.MaxJobIDLen+1)} {
		if err := contract.ValidateJobID(id); !errors.Is(err, contract.ErrInvalidJobID) {
			t.Errorf("%q: %v, want ErrInvalidJobID", id, err)
		}
	}
}

func TestJobKey(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]string{
		"job-1":                  "job-1",
		strings.Repeat("k", 128): strings.Repeat("k", 128),
		"a.b":                    "=", // hashed: "." is no KV key character
		"=x":                     "=", // hashed, so it cannot pose as a hash
		strings.Repeat("k", 129): "=",
	} {
		got := contract.JobKey(id)
		if want == "=" {
			if !strings.HasPrefix(got, "=") || len(got) != 44 || got == contract.JobKey(id+"!") {
				t.Errorf("JobKey(%q) = %q, want \"=\" and a base64url SHA-256", id, got)
			}
			continue
		}
		if got != want {
			t.Errorf("JobKey(%q) = %q, want %q", id, got, want)
		}
	}
}

// TestJobOutcome: what a claim means for another event with its id, the
// rule the worker applies and the client reports.
func TestJobOutcome(t *testing.T) {
	t.Parallel()
	held := contract.Job{ID: "j", Key: "k1", Event: "start_processing", Sequence: 7}
	for _, c := range []struct {
		key, event string
		seq        uint64
		want       contract.ClaimOutcome
	}{
		{"k1", "start_processing", 7, contract.Claimed},   // a redelivery of the holder
		{"k1", "start_processing", 9, contract.Duplicate}, // stored again
		{"k1", "start_processing", 0, contract.Duplicate}, // not stored yet
		{"k2", "start_processing", 9, contract.Conflict},
		{"k1", "confirm_payment", 0, contract.Conflict},
	} {
		if got := held.Outcome(c.key, c.event, c.seq); got != c.want {
			t.Errorf("%s %s seq %d: %v, want %v", c.key, c.event, c.seq, got, c.want)
		}
	}
}
