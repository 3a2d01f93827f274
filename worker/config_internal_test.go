package worker

import (
	"reflect"
	"testing"

	"github.com/orderly-dev/orderly/internal/queue"
)

// TestBrokerAdapterQueueConfigCoversSpec: every field of the adapter's
// spec but those the worker sets itself has its field in QueueConfig,
// carried over by spec, with the adapter's default.
func TestBrokerAdapterQueueConfigCoversSpec(t *testing.T) {
	st := reflect.TypeFor[queue.Spec]()
	qt := reflect.TypeFor[QueueConfig]()
	var q QueueConfig
	qv := reflect.ValueOf(&q).Elem()
	for i := range qt.NumField() {
		// A distinct value per field, to see each one arrive where it should.
		switch f := qv.Field(i); f.Kind() {
		case reflect.Int, reflect.Int32, reflect.Int64:
			f.SetInt(int64(i + 2))
		default:
			t.Fatalf("QueueConfig.%s: kind %s not covered by this test", qt.Field(i).Name, f.Kind())
		}
	}
	spec := reflect.ValueOf(q.spec("wf", true))
	for i := range st.NumField() {
		name := st.Field(i).Name
		switch name {
		case "Workflow", "Unpinned", "NoIndex": // set by the worker (NoIndex: Config.DisableInventory)
			continue
		}
		qf, ok := qt.FieldByName(name)
		if !ok {
			t.Errorf("queue.Spec.%s has no QueueConfig field", name)
			continue
		}
		if got, want := spec.FieldByName(name).Interface(), qv.FieldByIndex(qf.Index).Interface(); !reflect.DeepEqual(got, want) {
			t.Errorf("spec().%s = %v, want %v", name, got, want)
		}
	}
	if s := q.spec("wf", true); s.Workflow != "wf" || !s.Unpinned {
		t.Errorf("spec(wf, shared) = workflow %q, unpinned %v", s.Workflow, s.Unpinned)
	}
	d, sd := QueueConfig{}.WithDefaults(), queue.Spec{}.WithDefaults()
	if d.Partitions != sd.Partitions || d.AckWait != sd.AckWait || d.DedupeWindow != sd.DedupeWindow || d.MemberTTL != sd.MemberTTL {
		t.Errorf("QueueConfig{}.WithDefaults() = %+v, not the adapter's defaults %+v", d, sd)
	}
}
