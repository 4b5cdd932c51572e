# grove — build, run, test. `make run` starts the daemon on its default home;
# `make test` is what CI runs (.ci/run).
GO          ?= go
BIN         ?= bin
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

# make install: grove into $(BINDIR), by default $(PREFIX)/bin
# (/usr/local/bin), or $(GOBIN) when that is set (make install GOBIN=~/bin).
# Run make install PREFIX=~/.local to install without root.
PREFIX      ?= /usr/local
BINDIR      ?= $(if $(GOBIN),$(GOBIN),$(PREFIX)/bin)

.PHONY: build run test test-postgres test-short lint bench torture clean install uninstall

build:
	$(GO) build -o $(BIN)/grove ./cmd/grove
	$(GO) build -o $(BIN)/grove-bench ./cmd/grove-bench

install:
	mkdir -p $(DESTDIR)$(BINDIR)
	$(GO) build -o $(DESTDIR)$(BINDIR)/grove ./cmd/grove
	@echo "installed $(DESTDIR)$(BINDIR)/grove"
	@case ":$$PATH:" in *":$(BINDIR):"*) ;; *) echo "note: $(BINDIR) is not on your PATH";; esac

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/grove

run: build
	$(BIN)/grove serve

# vet + race detector + every test (real git, real SQLite, real processes).
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 30m ./...

# The PostgreSQL tests alone (make test runs them too): the store's, on
# both databases, and the daemon-level ones on a private server.
test-postgres:
	$(GO) test -race -count=1 ./store/...
	$(GO) test -race -count=1 -run 'Postgres' ./cmd/grove/

# vet + staticcheck + an untidy go.mod; .ci/run runs it before the tests.
lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) mod tidy -diff

bench: build
	$(BIN)/grove-bench

torture:
	GROVE_TORTURE=full $(GO) test -count=1 -timeout 60m -run Torture -v ./cmd/grove/

clean:
	rm -rf $(BIN)
