# BeTrace build. `make help` lists the targets; Taskfile.yml mirrors them.

GO        ?= go
BIN       := bin
RULES_DIR := rules-examples
RULE_OUT  := $(RULES_DIR)/build
# Every folder under rules-examples/ with a main.go is a rule; its folder name is its id.
RULE_IDS  := $(patsubst $(RULES_DIR)/%/main.go,%,$(wildcard $(RULES_DIR)/*/main.go))
RULE_WASM := $(addprefix $(RULE_OUT)/,$(addsuffix .wasm,$(RULE_IDS)))
GO_SRC    := $(shell find api guest-sdk -name '*.go' -not -name '*_test.go')

# Host packages run under the race detector; the rest (SDK, contract) natively.
HOST_PKGS  := ./host/...
OTHER_PKGS := ./api/... ./guest-sdk/... ./cmd/... ./deploy/...

.PHONY: help build rules test test-deps vet bench run demo fmt clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: rules ## build the betrace binary and the example rules
	$(GO) build -o $(BIN)/betrace ./cmd/betrace

rules: $(RULE_WASM) ## build every example rule into rules-examples/build/<rule-id>.wasm

$(RULE_OUT)/%.wasm: $(RULES_DIR)/%/main.go $(GO_SRC)
	@mkdir -p $(RULE_OUT)
	GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -o $@ ./$(RULES_DIR)/$*

vet: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

# Tools the tests run for real: redis-server (started per test on free
# ports), jq (runbook commands) and chromium (console tests). Installed with
# apt-get when missing and possible, otherwise named.
TEST_TOOLS := redis-server jq chromium

test-deps: ## install what the tests need (redis-server, jq, chromium) when missing
	@missing=""; for c in $(TEST_TOOLS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing for the tests"; \
	    apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq$$missing >/dev/null || exit 1; \
	  else echo "the tests need$$missing: install them (for example: sudo apt-get install$$missing)"; exit 1; fi; \
	fi

test: test-deps rules vet ## run every test (race detector on host packages)
	$(GO) test -race -count=1 -timeout 15m $(HOST_PKGS)
	@# allocation checks again without -race, which empties sync.Pools at random
	$(GO) test -count=1 -run 'AllocatesNothing' ./host/sandbox/
	$(GO) test -count=1 -timeout 10m $(OTHER_PKGS)
	deploy/prometheus/check.sh

bench: build ## run the benchmarks and drive a real server with the load generator (figures in README.md)
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -timeout 30m ./host/...
	$(GO) build -o $(BIN)/betrace-loadgen ./cmd/betrace-loadgen
	@for proto in grpc http; do for n in 5 20; do \
	  echo "== $$n rules over $$proto, as fast as the server accepts"; \
	  $(BIN)/betrace-loadgen -spawn $(BIN)/betrace -rules $$n -protocol $$proto -duration 20s || exit 1; \
	done; done
	@echo "== 20 rules over grpc at 50,000 spans/s (completion-to-stored latency at the target rate)"
	$(BIN)/betrace-loadgen -spawn $(BIN)/betrace -rules 20 -protocol grpc -duration 20s -rate 50000
	@echo "== 20 DSL rules over grpc at 50,000 spans/s (the same, rules compiled by the server)"
	$(BIN)/betrace-loadgen -spawn $(BIN)/betrace -rules 20 -dsl -protocol grpc -duration 20s -rate 50000
	@for sc in neighbour storm memory ceiling; do \
	  echo "== scenario $$sc over http (two fresh servers compared in one run; see cmd/betrace-loadgen/scenario.go)"; \
	  $(BIN)/betrace-loadgen -spawn $(BIN)/betrace -scenario $$sc -protocol http -duration 15s || exit 1; \
	done

run: build ## run BeTrace on its embedded store (./data), API on :12011, OTLP/gRPC on :4317
	$(BIN)/betrace serve

demo: build ## run the example rules over the sample traces without a server
	$(BIN)/betrace demo

fmt: ## format the code
	gofmt -w $$(find . -name '*.go' -not -path './.cache/*')

clean: ## remove build outputs
	rm -rf $(BIN) $(RULE_OUT) .cache
