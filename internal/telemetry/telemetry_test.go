package telemetry

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any leaves a goroutine behind (the
// SDK's batch processor).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

// TestTracingTurnedOn: off unless --otel or an OTLP endpoint says on; the
// SDK's own switches turn it off; bad settings are errors, and no
// exporter is dialled at start.
func TestTracingTurnedOn(t *testing.T) {
	for _, c := range []struct {
		name string
		flag bool
		env  map[string]string
		on   bool
	}{
		{"nothing", false, nil, false},
		{"--otel", true, nil, true},
		{"endpoint", false, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, true},
		{"traces endpoint", false, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}, true},
		{"only other OTEL_*", false, map[string]string{"OTEL_SERVICE_NAME": "x"}, false},
		{"SDK disabled", true, map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, false},
		{"exporter none", true, map[string]string{"OTEL_TRACES_EXPORTER": "none"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{Flag: c.flag, Service: "test", Getenv: env(c.env)}
			if got := cfg.Enabled(); got != c.on {
				t.Fatalf("Enabled: %v, want %v", got, c.on)
			}
			tr, err := Start(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if (tr.Provider != nil) != c.on {
				t.Errorf("provider %v, want on %v", tr.Provider, c.on)
			}
			if err := tr.Shutdown(context.Background()); err != nil {
				t.Errorf("shutdown with nothing to export: %v", err)
			}
		})
	}
	for _, c := range []map[string]string{
		{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
		{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"},
		{"OTEL_TRACES_EXPORTER": "zipkin"},
	} {
		if _, err := Start(context.Background(), Config{Flag: true, Getenv: env(c)}); !errors.Is(err, ErrConfig) {
			t.Errorf("%v: %v, want ErrConfig", c, err)
		}
	}
	tr, err := Start(context.Background(), Config{Flag: true, Getenv: env(map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})})
	if err != nil || tr.Protocol != "grpc" {
		t.Fatalf("grpc: %+v, %v", tr, err)
	}
	_ = tr.Shutdown(context.Background())
}
