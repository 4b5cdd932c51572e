# grove — build, run, test. `make run` starts the daemon on its default home;
# `make test` is what CI runs (.ci/run).
GO          ?= go
BIN         ?= bin
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build run test test-short lint bench torture clean

build:
	$(GO) build -o $(BIN)/grove ./cmd/grove
	$(GO) build -o $(BIN)/grove-bench ./cmd/grove-bench

run: build
	$(BIN)/grove serve

# vet + race detector + every test (real git, real SQLite, real processes).
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench: build
	$(BIN)/grove-bench

torture:
	GROVE_TORTURE=full $(GO) test -count=1 -timeout 60m -run Torture -v ./cmd/grove/

clean:
	rm -rf $(BIN)
