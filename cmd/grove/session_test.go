package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/store"
)

type storeTx = store.Tx

// testHTTPMain is `grove-testhttp [-exit N]`, a tiny service for session
// tests: an HTTP server on 127.0.0.1:$GROVE_PORT answering "ok" (or, with
// -exit N, a service that fails at once with code N). It prints why it
// could not listen and exits 1, as a real server would on EADDRINUSE.
func testHTTPMain() {
	if len(os.Args) == 3 && os.Args[1] == "-exit" {
		code, _ := strconv.Atoi(os.Args[2])
		fmt.Fprintf(os.Stderr, "testhttp: failing on purpose with code %d\n", code)
		os.Exit(code)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("GROVE_PORT"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "testhttp: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "testhttp: listening on %s\n", ln.Addr())
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	os.Exit(1)
}

// startSessions starts n sessions whose service records its pid, oldest
// first, and returns their keys.
func (h *harness) startSessions(keys ...string) {
	h.t.Helper()
	svc := h.writeAgent("svc.sh", `echo $$ > "svc.log"
exec grove-testhttp
`)
	for _, k := range keys {
		out := h.mustGrove("session", "start", k, "--repo", h.repo, "--", svc)
		if !strings.HasPrefix(out, k+" live port ") {
			h.t.Fatalf("session start %s: %q", k, out)
		}
	}
}

func (h *harness) servicePid(key string) int {
	h.t.Helper()
	p := filepath.Join(h.home, "worktrees", "repo-1", "s-"+key, "svc.log")
	h.until(10*time.Second, "service of "+key+" started", func() bool { _, err := os.Stat(p); return err == nil })
	return readInt(h.t, p)
}

func (h *harness) deps() *jobs.Deps {
	d, err := jobs.NewDeps(h.store(), h.home, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

// Idle TTL with an injected clock: a session idle past the TTL is evicted
// and its service process is gone; one used within the TTL stays.
func TestEvictIdleWithInjectedClock(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--port-range", "21100-21109")
	h.startSessions("old", "fresh")
	oldPid, freshPid := h.servicePid("old"), h.servicePid("fresh")
	ctx := context.Background()
	d := h.deps()
	// "fresh" was used 10 minutes ago, "old" an hour ago, by the injected clock.
	freshS, err := h.store().Session(ctx, "fresh")
	is.NoErr(err)
	now := freshS.LastUsedAt.Add(10 * time.Minute)
	is.NoErr(h.store().InTx(ctx, func(tx *storeTx) error {
		return tx.TouchSessionAt(ctx, "old", now.Add(-time.Hour))
	}))
	evicted, err := jobs.EvictIdle(ctx, d, now, 30*time.Minute)
	is.NoErr(err)
	is.Equal(evicted, []string{"old"})
	is.True(!alive(oldPid))
	is.True(alive(freshPid))
	s, err := h.store().Session(ctx, "old")
	is.NoErr(err)
	is.Equal(s.State, grove.SessionEvicted)
	is.True(s.Port != 0) // the port stays leased for the restart
	h.mustGrove("session", "close", "--force", "old")
	h.mustGrove("session", "close", "--force", "fresh")
	h.stopDaemon(syscall.SIGTERM)
}

// LRU: with a cap of 2 and three sessions the least recently used idle one
// is evicted; with all of them busy, none is.
func TestLRUCapNeverEvictsBusy(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--max-agents", "4", "--port-range", "21110-21119")
	h.startSessions("a", "b", "c")
	ctx := context.Background()
	d := h.deps()

	// All busy: a running task in each.
	release := filepath.Join(h.work, "release")
	marks := filepath.Join(h.work, "marks")
	is.NoErr(os.MkdirAll(marks, 0o755))
	agent := h.writeAgent("agent.sh", `touch "$MARKS/$GROVE_TASK_ID"
while [ ! -e "$RELEASE" ]; do sleep 0.05; done
`)
	var ids []string
	for _, k := range []string{"a", "b", "c"} {
		ids = append(ids, h.mustGrove("submit", "--session", k, "--env", "MARKS="+marks, "--env", "RELEASE="+release, "--", agent))
	}
	h.until(30*time.Second, "3 agents running", func() bool { e, _ := os.ReadDir(marks); return len(e) == 3 })
	evicted, err := jobs.LRUCap(ctx, d, 2, "")
	is.NoErr(err)
	is.Equal(len(evicted), 0)

	is.NoErr(os.WriteFile(release, nil, 0o644))
	h.mustGrove(append([]string{"wait"}, ids...)...)
	// Order of use: a (least recent), then b, then c.
	base := time.Now()
	is.NoErr(h.store().InTx(ctx, func(tx *storeTx) error {
		for i, k := range []string{"a", "b", "c"} {
			if err := tx.TouchSessionAt(ctx, k, base.Add(time.Duration(i)*time.Minute)); err != nil {
				return err
			}
		}
		return nil
	}))
	aPid := h.servicePid("a")
	evicted, err = jobs.LRUCap(ctx, d, 2, "")
	is.NoErr(err)
	is.Equal(evicted, []string{"a"})
	is.True(!alive(aPid))
	for _, k := range []string{"a", "b", "c"} {
		for _, id := range ids {
			_, _, _ = h.grove("discard", id)
		}
		h.mustGrove("session", "close", "--force", k)
	}
	h.stopDaemon(syscall.SIGTERM)
}
