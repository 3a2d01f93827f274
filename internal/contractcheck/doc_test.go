package contractcheck_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderly-dev/orderly/contract"
)

// TestWireContractDoc holds docs/contract.md to package contract: every
// error code is in its table, every header is named, the schemas it links
// exist, and its example messages validate against them.
func TestWireContractDoc(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/contract.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, code := range contract.Codes() {
		if !strings.Contains(doc, "| `"+code+"` |") {
			t.Errorf("docs/contract.md: no row for the error code %s", code)
		}
	}
	for _, h := range []string{
		contract.HeaderJobID, contract.HeaderDLQReason, contract.HeaderDLQSubject, contract.HeaderDLQSequence,
		contract.HeaderDLQDelivered, contract.HeaderDLQAt, contract.HeaderDLQJobID,
	} {
		if !strings.Contains(doc, "| `"+h+"` |") {
			t.Errorf("docs/contract.md: no row for the header %s", h)
		}
	}
	for _, file := range []string{"event.schema.json", "status.schema.json", "state.schema.json", "index.schema.json", "workflow.schema.json"} {
		if !strings.Contains(doc, "](schemas/"+file+")") {
			t.Errorf("docs/contract.md does not link schemas/%s", file)
		}
		if _, err := os.Stat(filepath.Join(schemaDir, file)); err != nil {
			t.Error(err)
		}
	}
	schemas := map[string]string{`{"event":`: "event.schema.json", `{"workflow":`: "status.schema.json", `{"state":`: "state.schema.json", `{"name":`: "workflow.schema.json"}
	examples := map[string]int{}
	for _, line := range strings.Split(doc, "\n") {
		for prefix, file := range schemas {
			if strings.HasPrefix(line, prefix) {
				fragment := ""
				if file == "status.schema.json" && strings.Contains(line, `"since":`) {
					// An inventory entry, not a status: both start with the
					// workflow.
					file = "index.schema.json"
					if strings.Contains(line, `"action":`) {
						fragment = "#/$defs/workEntry"
					}
				}
				examples[file]++
				if err := validate(compileSchema(t, file, fragment), []byte(line)); err != nil {
					t.Errorf("docs/contract.md: the example %s does not validate against %s%s: %v", line, file, fragment, err)
				}
			}
		}
	}
	schemas[`{"workflow":"order","key":"order-7","state":`] = "index.schema.json"
	for _, file := range schemas {
		if examples[file] == 0 {
			t.Errorf("docs/contract.md: no example for %s", file)
		}
	}
}
