// Package telemetry sets up OpenTelemetry tracing for the binaries (worker,
// enqueue): the SDK's tracer provider with an OTLP exporter, configured by
// the standard OTEL_* environment variables. The library packages use the
// OpenTelemetry API only (internal/tracing); the SDK and the exporters are
// linked into the binaries through this package alone.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly-dev/orderly/internal/buildinfo"
	"github.com/orderly-dev/orderly/internal/ratelog"
)

// ErrConfig is returned for OTEL_* settings that cannot work.
var ErrConfig = errors.New("telemetry")

// Config says how a binary traces.
type Config struct {
	// Flag is the binary's --otel: trace even without an endpoint in the
	// environment (the exporter's default, localhost, is then used).
	Flag bool
	// Service is the default service.name; OTEL_SERVICE_NAME and
	// OTEL_RESOURCE_ATTRIBUTES override it.
	Service string
	// Getenv reads the environment. Default: none is read (every
	// variable is empty). The exporters read their own OTEL_EXPORTER_OTLP_*
	// variables from the process's environment.
	Getenv func(string) string
	// Logger receives the SDK's errors (an export that failed, say), one
	// line a minute at most. Default: they are dropped.
	Logger *zerolog.Logger
}

// Enabled reports whether the settings turn tracing on: --otel, or an OTLP
// endpoint in the environment (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); never with OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none.
func (c Config) Enabled() bool {
	env := c.env()
	if strings.EqualFold(env("OTEL_SDK_DISABLED"), "true") || env("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	return c.Flag || env("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

func (c Config) env() func(string) string {
	if c.Getenv == nil {
		return func(string) string { return "" }
	}
	return c.Getenv
}

// Tracing is a binary's tracer provider, or none.
type Tracing struct {
	// Provider is the tracer provider; nil when tracing is off.
	Provider trace.TracerProvider
	// Protocol is the OTLP protocol the exporter speaks: "grpc" or
	// "http/protobuf"; empty when tracing is off.
	Protocol string

	sdk *sdktrace.TracerProvider
}

// Start returns the tracing the settings call for. When it is on it is also
// made the process's global tracer provider, with the W3C propagators
// (trace context and baggage), so that actions instrumented with
// OpenTelemetry's contrib packages (otelhttp, say) join the traces. Nothing
// is dialled before the first export: a collector that is not there costs
// failed exports (reported to OnError), never a failed start.
func Start(ctx context.Context, c Config) (*Tracing, error) {
	if !c.Enabled() {
		return &Tracing{}, nil
	}
	env := c.env()
	if e := env("OTEL_TRACES_EXPORTER"); e != "" && e != "otlp" {
		return nil, fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%q: only otlp (or none) is built in", ErrConfig, e)
	}
	protocol := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = env("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	// With no endpoint in the environment (--otel alone), the default is
	// the specification's, a local collector in plain text; the Go
	// exporters would dial it with TLS.
	local := env("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" &&
		env("OTEL_EXPORTER_OTLP_INSECURE") == "" && env("OTEL_EXPORTER_OTLP_TRACES_INSECURE") == ""
	switch protocol {
	case "", "http/protobuf":
		protocol = "http/protobuf"
		var opts []otlptracehttp.Option
		if local {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	case "grpc":
		var opts []otlptracegrpc.Option
		if local {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("%w: OTLP protocol %q: want grpc or http/protobuf", ErrConfig, protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: OTLP exporter: %v", ErrConfig, err)
	}
	// The service's name and version first, so that the environment's
	// (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) override them.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", c.Service),
			attribute.String("service.version", buildinfo.Get().Version)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("%w: resource: %v", ErrConfig, err)
	}
	// Batched (OTEL_BSP_* tune it), sampled as OTEL_TRACES_SAMPLER says
	// (default: parent-based, always on).
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	if c.Logger != nil {
		log, limit := *c.Logger, &ratelog.Limiter{Every: time.Minute}
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			if ok, held := limit.Allow(time.Now()); ok {
				log.Warn().Err(err).Int("held_back", held).Msg("tracing: OpenTelemetry failed (a collector away?); spans may be lost")
			}
		}))
	}
	return &Tracing{Provider: tp, Protocol: protocol, sdk: tp}, nil
}

// Shutdown exports the spans still held and stops; within ctx, or 5 seconds
// at most if ctx has no deadline. It does nothing when tracing is off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}
