# Orderly. `make help` lists the targets.
.DEFAULT_GOAL := help
GO ?= go

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.PHONY: test
test: ## run every test with the race detector (what CI runs)
	$(GO) test -race -count=1 ./...

.PHONY: bench
bench: ## run the Go benchmarks with allocations (micro-benchmarks and the 100,000-key one)
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: lint
lint: ## gofmt and go vet
	@test -z "$$(gofmt -l .)" || (gofmt -l . && exit 1)
	$(GO) vet ./...

.PHONY: run
run: ## run the worker with an embedded NATS server (store in ./orderly-data)
	$(GO) run ./cmd/worker

# What --version and orderly_build_info report (see internal/buildinfo).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS := -X github.com/orderly-dev/orderly/internal/buildinfo.version=$(VERSION) \
	-X github.com/orderly-dev/orderly/internal/buildinfo.revision=$(REVISION)

.PHONY: build
build: ## build bin/worker and bin/enqueue, stamped with VERSION and REVISION (default: from git)
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/worker ./cmd/enqueue

.PHONY: ci
ci: ## what CI runs
	bash .ci/run

.PHONY: bench-e2e
bench-e2e: ## Orderly end to end vs raw JetStream, one embedded server (ARGS=-million adds 1M keys)
	$(GO) run ./internal/e2ebench $(ARGS)
