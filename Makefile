# healstore — build, test and run.
#
# On a fresh machine two commands are enough:
#   make demo   runs healstore end to end on local backends and pebble
#   make test   installs and starts the test components, runs vet and every test
#
# `make help` lists the rest.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# go may live outside a non-login shell's PATH on a fresh machine.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
GOFMT ?= $(shell command -v gofmt 2>/dev/null || echo $(dir $(GO))gofmt)
BIN ?= healstore
# VCS stamping needs a git that trusts the checkout's owner; a CI checkout
# owned by another user would otherwise fail every build.
GOBUILDFLAGS ?= -buildvcs=false
FUZZTIME ?= 10s
BENCH_PKGS ?= ./encoder ./backends/...
BENCHTIME ?= 1s

export FUZZTIME

.PHONY: help build demo test test-short bench lint tools fuzz clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build the healstore binary into ./healstore
	$(GO) build $(GOBUILDFLAGS) -o $(BIN) ./cmd/healstore

demo: ## run the demo: local backends + pebble, lose shards, heal, read back
	$(GO) run $(GOBUILDFLAGS) ./cmd/healstore demo

test: ## install + start components (versitygw, etcd, fuse3, fio, ...), go vet, go test ./...
	bash scripts/test.sh

test-short: ## quick unit tests, no components started (component tests skip)
	$(GO) test -short ./...

bench: build ## go benchmarks of encoder and backends, then `healstore bench encode`
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) $(BENCH_PKGS)
	./$(BIN) bench encode --k 10 --m 4
	./$(BIN) bench encode --k 10 --m 4 --json

lint: ## gofmt, go vet, layer rules
	@unformatted="$$(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -print0 | xargs -0 -r $(GOFMT) -l)"; \
	if [[ -n "$$unformatted" ]]; then echo "gofmt: these files need formatting (run gofmt -w):"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	bash scripts/check-layers.sh

tools: ## install what tests need (apt: etcd, fuse3, fio, sqlite3, git, rsync; go: versitygw)
	bash scripts/services.sh install

fuzz: ## run every Fuzz target for FUZZTIME each (default 10s)
	bash scripts/fuzz.sh

clean: ## remove the built binary
	rm -f $(BIN)
