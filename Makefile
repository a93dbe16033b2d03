# resendq — run `make help` for the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
BIN     := bin/resendq

.PHONY: help test build dev lint fuzz bench bench-quick clean

help: ## show this help
	@echo "resendq make targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'

test: ## install missing deps, gofmt, vet, staticcheck, race tests, fuzz smoke, compose check (TESTFLAGS=... for go test)
	scripts/test.sh

build: ## build bin/resendq (VERSION from git describe, else "dev")
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/resendq

dev: ## run the worker locally in dev mode with 12 demo tasks
	$(GO) run ./cmd/resendq dev --demo 12

lint: ## gofmt + go vet + staticcheck (pinned, installed into bin/tools by scripts/tools.sh)
	@files=$$(find . \( -name '.?*' -o -name vendor -o -name testdata -o -name node_modules \) -prune -o -type f -name '*.go' -print); \
	out=$$(gofmt -l $$files); \
	if [ -n "$$out" ]; then echo "not gofmt-ed:"; echo "$$out"; exit 1; fi; \
	echo "gofmt: ok ($$(echo $$files | wc -w) files)"
	$(GO) vet ./...
	cd deploy/composecheck && $(GO) vet ./...
	scripts/tools.sh
	bin/tools/staticcheck ./...
	cd deploy/composecheck && ../../bin/tools/staticcheck ./...

fuzz: ## run every fuzz target for FUZZTIME each (default 1m; make test runs them 3s each)
	scripts/fuzz.sh $(FUZZTIME)

bench: ## run the benchmarks (scripts/bench.sh)
	scripts/bench.sh

bench-quick: ## short benchmark run (scripts/bench.sh -quick)
	scripts/bench.sh -quick

clean: ## remove build and test output
	rm -rf bin/ testoutput/ coverage.out coverage.html
