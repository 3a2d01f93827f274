package deploy

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
)

var update = flag.Bool("update", false, "rewrite generated manifests")

// TestScaledObjectIsGenerated keeps KEDA's triggers in step with the
// partition count: one trigger per partition consumer of the base's
// ORDERLY_PARTITIONS, so that a partition added there is never left out of
// the lag the autoscaler sees. -update rewrites the file.
func TestScaledObjectIsGenerated(t *testing.T) {
	t.Parallel()
	_, c := workerPod(t, build(t, filepath.Join(k8sDir, "base", "worker")))
	e, ok := env(c, "ORDERLY_PARTITIONS")
	if !ok {
		t.Fatal("base/worker sets no ORDERLY_PARTITIONS: KEDA's triggers need the count")
	}
	n, err := strconv.Atoi(e.Value)
	if err != nil || n <= 0 {
		t.Fatalf("ORDERLY_PARTITIONS=%q", e.Value)
	}
	dir := filepath.Join(k8sDir, "components", "keda")
	tmpl, err := template.ParseFiles(filepath.Join(dir, "scaledobject.yaml.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	data := struct {
		Workflow, Stream string
		Partitions, Last int
		Consumers        []string
	}{Workflow: workflow, Stream: "ORDERLY_EVENTS_" + strings.ToUpper(workflow), Partitions: n, Last: n - 1}
	for p := range n {
		data.Consumers = append(data.Consumers, fmt.Sprintf("orderly_%s_p%d", workflow, p))
	}
	var want bytes.Buffer
	if err := tmpl.Execute(&want, data); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "scaledobject.yaml")
	if *update {
		if err := os.WriteFile(path, want.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("%s is not what its template renders for %d partitions: run `go test . -run TestScaledObjectIsGenerated -update` in deploy/", path, n)
	}
}
