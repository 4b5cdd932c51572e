package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

// commitAgent commits a file on its branch (through the private object
// store under the sandbox).
const commitAgent = `echo "$GROVE_TASK_ID" >> "$COUNTER"
echo agent > committed.txt
git add committed.txt && git -c user.name=Agent -c user.email=a@example.com commit -q -m "agent commit"
`

// TestSandboxObjectCrashPoints: the daemon dies at each step of the
// private object store's life (listed as an alternate, objects linked into
// the shared store, unlisted); at the crash the repository reads the
// agent's commit (git fsck), and a new daemon finishes the task with the
// commit in the shared store and the private store gone.
func TestSandboxObjectCrashPoints(t *testing.T) {
	if supervise.LandlockABI() < 1 {
		t.Skip("no Landlock (this machine has ABI 7: not skipped here)")
	}
	for _, fp := range []string{"sandbox.after-alternate", "objects.after-link", "objects.after-unlist"} {
		t.Run(fp, func(t *testing.T) {
			is := is.New(t)
			h := newHarness(t)
			h.strictSandbox()
			counter := filepath.Join(h.work, "counter")
			agent := h.writeAgent("agent.sh", commitAgent)
			is.NoErr(os.WriteFile(counter, nil, 0o644)) // a file the agent may append to
			died := h.startCrashingDaemon(fp, "--allow-write", counter)
			id := h.mustGrove("submit", "--repo", h.repo, "--env", "COUNTER="+counter, "--", agent)
			select {
			case st := <-died:
				ws, ok := st.Sys().(syscall.WaitStatus)
				is.True(ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL)
			case <-time.After(slow(60 * time.Second)):
				h.dumpState()
				t.Fatalf("the daemon never reached failpoint %s", fp)
			}
			h.git("fsck", "--connectivity-only", "--no-dangling") // readable at the crash
			h.startDaemon("--allow-write", counter)
			h.until(60*time.Second, "task in review", func() bool { return h.task(id).State == grove.StateReview })
			h.stopDaemon(syscall.SIGTERM)
			ws, err := h.store().TaskWorkspace(context.Background(), id)
			is.NoErr(err)
			is.True(strings.Contains(h.git("log", "--format=%s", "refs/heads/"+ws.Branch), "agent commit"))
			alt, _ := os.ReadFile(filepath.Join(h.repo, ".git", "objects", "info", "alternates"))
			is.True(!strings.Contains(string(alt), "grove-objects"))
			_, err = os.Stat(filepath.Join(h.repo, ".git", "worktrees", id, "grove-objects"))
			is.True(os.IsNotExist(err))
			h.git("fsck", "--connectivity-only", "--no-dangling")
			is.Equal(countLines(t, counter), map[string]int{id: 1}) // the agent ran once
		})
	}
}

// TestSandboxMigratesOldBranch: a task from before each task's branch got
// a directory of its own (grove/<id>) is renamed to grove/<id>/work
// before its next run, and the row follows, also across a crash between
// the rename and the row update.
func TestSandboxMigratesOldBranch(t *testing.T) {
	if supervise.LandlockABI() < 1 {
		t.Skip("no Landlock (this machine has ABI 7: not skipped here)")
	}
	is := is.New(t)
	h := newHarness(t)
	h.strictSandbox()
	marker := filepath.Join(h.work, "marker")
	agent := h.writeAgent("agent.sh", `if [ -e "$MARKER" ]; then
echo agent > committed.txt
git add committed.txt && git -c user.name=Agent -c user.email=a@example.com commit -q -m "agent commit"
else
echo first > work.txt; touch "$MARKER"; exec sleep 60
fi
`)
	h.startDaemon("--sandbox", "off")
	id := h.mustGrove("submit", "--repo", h.repo, "--timeout", "1s", "--env", "MARKER="+marker, "--", agent)
	h.waitEvent(60*time.Second, id, "close_refused") // timed out, worktree kept: work.txt is at risk
	is.Equal(h.task(id).State, grove.StateFailed)
	h.stopDaemon(syscall.SIGTERM)
	// Make it a task of an older grove: branch grove/<id>.
	ctx := context.Background()
	ws, err := h.store().TaskWorkspace(ctx, id)
	is.NoErr(err)
	is.Equal(ws.Branch, "grove/"+id+"/work")
	h.git("branch", "-m", ws.Branch, "grove/"+id)
	is.NoErr(h.store().InTx(ctx, func(tx *store.Tx) error { return tx.SetWorkspaceBranch(ctx, ws.ID, "grove/"+id, ws.BaseCommit) }))

	died := h.startCrashingDaemon("sandbox.after-branch-rename")
	h.mustGrove("retry", id)
	select {
	case <-died:
	case <-time.After(slow(60 * time.Second)):
		h.dumpState()
		t.Fatal("the daemon never reached sandbox.after-branch-rename")
	}
	h.startDaemon()
	h.until(60*time.Second, "task in review", func() bool { return h.task(id).State == grove.StateReview })
	h.stopDaemon(syscall.SIGTERM)
	ws, err = h.store().TaskWorkspace(ctx, id)
	is.NoErr(err)
	is.Equal(ws.Branch, "grove/"+id+"/work")
	is.True(strings.Contains(h.git("log", "--format=%s", "refs/heads/"+ws.Branch), "agent commit"))
	is.True(strings.Contains(h.mustGrove("diff", "--stat", id), "committed.txt"))
}

// TestSandboxRepairsLinks: an agent that points its admin dir's commondir
// somewhere of its own and replaces its worktree's .git with a directory
// (so that the daemon's next git there would read the agent's config) has
// both repaired before the diff, and the task reaches review with its work.
func TestSandboxRepairsLinks(t *testing.T) {
	if supervise.LandlockABI() < 1 {
		t.Skip("no Landlock (this machine has ABI 7: not skipped here)")
	}
	is := is.New(t)
	h := newHarness(t)
	h.strictSandbox()
	agent := h.writeAgent("agent.sh", `gd=$(git rev-parse --absolute-git-dir)
echo work > f.txt
echo "$TMPDIR" > "$gd/commondir"
rm .git && mkdir .git
`)
	h.startDaemon()
	id := h.mustGrove("submit", "--repo", h.repo, "--", agent)
	h.mustGrove("wait", id)
	is.Equal(h.task(id).State, grove.StateReview)
	evs, err := h.store().Events(context.Background(), id, 0)
	is.NoErr(err)
	is.True(hasEvent(evs, "links_repaired"))
	is.True(strings.Contains(h.mustGrove("diff", "--stat", id), "f.txt"))
	h.stopDaemon(syscall.SIGTERM)
}
