package apicheck

import (
	"slices"
	"strings"
	"testing"
)

// sdkPackages are the prefixes of OpenTelemetry's SDK, its exporters and
// what they bring (gRPC, the OTLP protobufs): only the binaries link them,
// through internal/telemetry.
var sdkPackages = []string{
	"go.opentelemetry.io/otel/sdk", "go.opentelemetry.io/otel/exporters/",
	"go.opentelemetry.io/proto/", "google.golang.org/grpc",
}

// TestTracingLibraryUsesTheAPIOnly: a service that imports Orderly's
// library packages and does not trace pays for the OpenTelemetry API only
// (a few small packages), never the SDK and its exporters, which the
// binaries link through internal/telemetry.
func TestTracingLibraryUsesTheAPIOnly(t *testing.T) {
	t.Parallel()
	const mod = "github.com/orderly-dev/orderly/"
	libs := []string{"contract", "client", "worker", "statemachine", "order", "orderlytest", "embedded", "console"}
	for _, lib := range libs {
		deps := strings.Fields(string(goCmd(t, "list", "-deps", "./"+lib)))
		for _, d := range deps {
			if slices.ContainsFunc(sdkPackages, func(p string) bool { return strings.HasPrefix(d, p) }) {
				t.Errorf("%s depends on %s: the library may use the OpenTelemetry API only; the SDK is the binaries' (internal/telemetry)", lib, d)
			}
			if d == mod+"internal/telemetry" {
				t.Errorf("%s imports internal/telemetry, the binaries' SDK set-up", lib)
			}
		}
	}
	// The check sees the SDK where it is.
	deps := strings.Fields(string(goCmd(t, "list", "-deps", "./cmd/worker")))
	if !slices.Contains(deps, "go.opentelemetry.io/otel/sdk/trace") {
		t.Errorf("cmd/worker does not link the SDK: the check above proves nothing")
	}
}
