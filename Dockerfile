# syntax=docker/dockerfile:1
# Orderly's image: both binaries (worker, the entrypoint, and enqueue),
# static (CGO off), on distroless with CA certificates, as a numeric non-root
# user. deploy/manifests_test.go checks this file's shape against the code and
# the Kubernetes manifests. The build needs the root module alone: deploy/, a
# module of its own for its tests, stays out of the context (.dockerignore).
#
#   docker build -t ghcr.io/orderly-dev/orderly:dev \
#     --build-arg VERSION=$(git describe --tags --always --dirty) --build-arg REVISION=$(git rev-parse HEAD) .
#
# VERSION and REVISION are what `worker --version` and orderly_build_info
# report: the build context has no .git for Go to read them from.
#   docker run --rm -p 8080:8080 ghcr.io/orderly-dev/orderly:dev   # embedded NATS inside
#   docker run --rm -e NATS_URL=nats://nats:4222 ghcr.io/orderly-dev/orderly:dev

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=""
ARG REVISION=""
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
    -ldflags="-s -w -X github.com/orderly-dev/orderly/internal/buildinfo.version=${VERSION} -X github.com/orderly-dev/orderly/internal/buildinfo.revision=${REVISION}" \
    -o /out/ ./cmd/worker ./cmd/enqueue
# The embedded server's store, owned by the runtime user (distroless has no shell to make it).
RUN mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/worker /out/enqueue /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/data /data
# Inside a container, /healthz, /readyz and /metrics must be reachable from
# outside it; the embedded NATS server (used only without NATS_URL) stays on
# the container's loopback unless ORDERLY_LISTEN says otherwise.
ENV ORDERLY_HTTP=:8080 \
    ORDERLY_DATA_DIR=/data
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/worker"]
