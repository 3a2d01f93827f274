# Orderly. `make help` lists the targets.
.DEFAULT_GOAL := help
GO ?= go

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# Every Go module in the repository, found as the go command finds them (a
# go.mod outside testdata and outside directories starting with . or _):
# the root module, and deploy/, whose Kubernetes and kustomize test
# dependencies stay out of the root go.mod. A new module is tested without
# editing this file (internal/apicheck checks that).
MODULES := $(sort $(patsubst %/go.mod,%,$(shell find . -name go.mod -not -path '*/testdata/*' -not -path '*/.*/*' -not -path '*/_*')))
# Each module is built with its own go.mod, as CI and importers see it, not
# with a developer's go.work.
export GOWORK := off

.PHONY: modules
modules: ## list the Go modules that test, vet and tidy run in
	@echo $(MODULES)

.PHONY: test
test: ## run every module's tests with the race detector (what CI runs)
	@failed=; for m in $(MODULES); do \
		echo "== go test $$m"; \
		(cd $$m && $(GO) test -race -count=1 -timeout 15m ./...) || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "tests failed in:$$failed"; exit 1; fi

# The wire contract's codecs are fuzzed against encoding/json
# (contract/codec_test.go). go runs one -fuzz target per invocation, so each
# target found in the package runs on its own for FUZZTIME. A count of
# executions, not a duration: when a duration runs out while a worker is
# minimizing a new input, go test can fail with "context deadline exceeded"
# (seen on a loaded machine), and a count also does the same work however
# busy the machine is (a few seconds each here).
FUZZTIME ?= 20000x

.PHONY: fuzz
fuzz: ## run each fuzz target of package contract FUZZTIME (default 20000x executions; CI runs this)
	@set -e; for f in $$($(GO) test -list '^Fuzz' ./contract | grep '^Fuzz'); do \
		echo "== fuzz $$f"; \
		$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) ./contract; \
	done

.PHONY: screenshots
screenshots: ## redo docs/console-overview.png and docs/console-key.png (the console's browser test, headless Chromium)
	$(GO) test -count=1 -run '^TestConsoleInBrowser$$' ./console -update

.PHONY: bench
bench: ## run the Go benchmarks with allocations (micro-benchmarks and the 100,000-key one)
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: bench-inventory
bench-inventory: ## the inventory's queries (stats, keys, stuck) at 1,000,000 keys (a few minutes)
	ORDERLY_BENCH_INVENTORY_KEYS=1000000 $(GO) test -run '^$$' -bench InventoryMillion -benchtime 20x -timeout 60m -v ./client/

.PHONY: lint
lint: vet ## gofmt over every file, and go vet in every module
	@test -z "$$(gofmt -l .)" || (gofmt -l . && exit 1)

.PHONY: vet
vet: ## go vet in every module
	@set -e; for m in $(MODULES); do echo "== go vet $$m"; (cd $$m && $(GO) vet ./...); done

.PHONY: tidy
tidy: ## go mod tidy in every module
	@set -e; for m in $(MODULES); do echo "== go mod tidy $$m"; (cd $$m && $(GO) mod tidy); done

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

# The scale-out tests of issue 20 (cmd/worker/scale_test.go): a 3-node
# cluster of nats-server processes, worker processes, and a NATS node or a
# worker killed with SIGKILL, a cluster that forms late, a rolling restart.
# `make test` runs one test of each; this adds the long ones (a node lost
# under a paced load), verbose, with their figures. RATE is the paced load
# in events/s (the issue's figure is 2000; a loaded 2-core machine keeps
# up with about 100).
RATE ?= 100

.PHONY: scale
scale: ## the scale-out tests with their long variants and figures: NATS nodes and workers killed under load (RATE=100 events/s)
	$(GO) test -race -count=1 -timeout 30m -v -run 'TestNATSNodeLoss|TestWorkerLoss|TestStartUpWaits|TestRollingRestart' ./cmd/worker -args -scale.long -scale.rate $(RATE)

# The soak runs its own binary as the workers and, without a nats-server of
# go.mod's version on the PATH, as the nodes: one go build, from this tree.
.PHONY: soak
soak: ## the seeded fault-injection soak: 3 NATS nodes, 3 workers, faults, a history check (ARGS='-seed N -duration 10m'; default 2m)
	$(GO) run ./internal/soak/cmd/soak $(ARGS)
