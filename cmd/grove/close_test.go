package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
)

// groveIn runs the CLI in dir, killed after limit; timedOut reports that.
func (h *harness) groveIn(dir string, limit time.Duration, args ...string) (stdout, stderr string, err error, timedOut bool) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "grove", args...)
	cmd.Dir, cmd.Env = dir, h.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err, ctx.Err() != nil
}

func (h *harness) worktreeOf(id string) string {
	h.t.Helper()
	ws, err := h.store().TaskWorkspace(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return ws.Path
}

// Issue 10, item 5: `grove close` run from inside the worktree returns the
// daemon's refusal within seconds (exit 1, the process reason, "you are
// inside it"), instead of passing its own gate (which cannot see itself)
// and then printing "waiting for close…" forever. `ls --at-risk`
// afterwards shows the truth: that process is gone.
func TestCloseFromInsideTheWorktree(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon()
	id := h.mustGrove("submit", "--repo", h.repo, "--", "true")
	h.mustGrove("wait", id)
	wt := h.worktreeOf(id)

	start := time.Now()
	_, errOut, err, timedOut := h.groveIn(wt, slow(30*time.Second), "close", id)
	took := time.Since(start)
	t.Logf("grove close from inside answered in %s: %s", took.Round(time.Millisecond), errOut)
	is.True(!timedOut) // it used to hang
	var ee *exec.ExitError
	is.True(errors.As(err, &ee))
	is.Equal(ee.ExitCode(), 1)
	is.True(strings.Contains(errOut, "process (pids "))
	is.True(strings.Contains(errOut, "hint: you are inside it"))
	// (It may print "waiting for close" once: a close waits up to 5 s for
	// processes that are the only risk to exit before it refuses.)
	_, err = os.Stat(wt)
	is.NoErr(err)

	// ls --at-risk re-checks processes: the CLI that was inside has exited.
	out := h.mustGrove("ls", "--at-risk")
	is.True(strings.Contains(out, id))
	is.True(!strings.Contains(out, "pids"))

	// From outside it closes (the reaper would too: the close was asked).
	out = h.mustGrove("close", id)
	is.True(strings.Contains(out, id+" closed"))
	_, err = os.Stat(wt)
	is.True(errors.Is(err, os.ErrNotExist))

	// Without a daemon: the intent is recorded, exit 0, said so.
	id2 := h.mustGrove("submit", "--repo", h.repo, "--", "true")
	h.mustGrove("wait", id2)
	h.stopDaemon(syscall.SIGTERM)
	out = h.mustGrove("close", id2)
	is.True(strings.Contains(out, "close queued; it runs when grove serve is up"))
	h.startDaemon()
	h.until(30*time.Second, "queued close done", func() bool { return h.closed(id2) })
	h.stopDaemon(syscall.SIGTERM)
}

// leaks lists what a settled repository should not have: worktrees other
// than the main one, grove branches, admin dirs, worktree directories
// under the home, trash entries whose removal did not finish.
func (h *harness) leaks() []string {
	h.t.Helper()
	var out []string
	for _, l := range strings.Split(h.git("worktree", "list", "--porcelain"), "\n") {
		if p, ok := strings.CutPrefix(l, "worktree "); ok && p != h.repo {
			if r, err := filepath.EvalSymlinks(h.repo); err != nil || p != r {
				out = append(out, "worktree "+p)
			}
		}
	}
	if b := strings.TrimSpace(h.git("branch", "--list", "grove/*")); b != "" {
		out = append(out, "branches "+b)
	}
	if ents, _ := os.ReadDir(filepath.Join(h.repo, ".git", "worktrees")); len(ents) > 0 {
		for _, e := range ents {
			out = append(out, "admin dir "+e.Name())
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(h.home, "worktrees", "*", "*"))
	for _, d := range dirs {
		out = append(out, "directory "+d)
	}
	// The trash keeps every removed worktree for a while by design: an
	// entry is a leak only when its removal did not finish (a crash left
	// it mid-way and nothing resumed it) or it is marked KEPT.
	trash, err := gitops.ListTrash(filepath.Join(h.home, "trash"), time.Now())
	if err != nil {
		out = append(out, "trash: "+err.Error())
	}
	for _, e := range trash {
		if e.Problem != "" || e.Manifest.Step != gitops.StepDone {
			out = append(out, fmt.Sprintf("trash %s (step %q, %s)", e.Name(), e.Manifest.Step, e.Problem))
		}
	}
	return out
}

// waitDeath waits for the daemon to kill itself at a failpoint.
func (h *harness) waitDeath(limit time.Duration) {
	h.t.Helper()
	done := make(chan struct{})
	go func() { _ = h.daemon.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(slow(limit)):
		h.dumpState()
		h.t.Fatalf("daemon did not die at its failpoint within %s", slow(limit))
	}
}

// The removal's crash points (jobs.Remove): the daemon dies there, a new
// one (no failpoint) starts, and the task ends closed with nothing leaked:
// no worktree, grove branch, admin dir, directory or trash entry.
// close.after-snapshot needs a forced close of a worktree holding work; the
// snapshot then holds it.
func TestCloseCrashPoints(t *testing.T) {
	for _, point := range []string{"close.after-claim", "close.after-gate", "close.after-snapshot",
		"close.after-retire", "close.before-archive"} {
		t.Run(point, func(t *testing.T) {
			is := is.New(t)
			h := newHarness(t)
			agent := h.writeAgent("agent.sh", `echo "$GROVE_TASK_ID" > "f-$GROVE_TASK_ID.txt"`+"\n")
			base := h.env
			h.env = append(append([]string{}, base...), grove.FailpointEnv+"="+point)
			h.startDaemon()
			h.env = base
			forced := point == "close.after-snapshot"
			var id string
			if forced {
				id = h.mustGrove("submit", "--repo", h.repo, "--", agent)
				h.mustGrove("wait", id)
				is.NoErr(os.WriteFile(filepath.Join(h.worktreeOf(id), "notes.txt"), []byte("mine\n"), 0o644))
				_, _, _, _ = h.groveIn(h.work, slow(60*time.Second), "close", "--force", id)
			} else {
				id = h.mustGrove("submit", "--repo", h.repo, "--apply", "auto", "--", agent)
			}
			h.waitDeath(60 * time.Second)
			is.True(!h.closed(id)) // it died before the end

			h.startDaemon()
			h.until(60*time.Second, "task closed after the crash", func() bool { return h.closed(id) })
			h.until(30*time.Second, "nothing leaked", func() bool { return len(h.leaks()) == 0 })
			ws, err := h.store().TaskWorkspace(context.Background(), id)
			is.NoErr(err)
			is.Equal(ws.State, grove.WorkspaceRemoved)
			if forced {
				is.Equal(ws.SnapshotRef, "refs/grove/snapshots/"+id)
				is.True(strings.Contains(h.git("show", ws.SnapshotRef+":worktree/notes.txt"), "mine"))
			} else {
				is.True(strings.Contains(h.git("show", "main:f-"+id+".txt"), id)) // applied
			}
			h.stopDaemon(syscall.SIGTERM)
		})
	}
}

// The race of issue 10: tasks applied and closed while the reaper runs
// every second with no grace. Every task ends closed, nothing leaks, and a
// user's worktree whose directory was moved away keeps its admin dir
// throughout. 30 tasks by default, the 100 with GROVE_TORTURE=full.
func TestReaperRacesCloses(t *testing.T) {
	is := is.New(t)
	n := 30
	if os.Getenv("GROVE_TORTURE") == "full" {
		n = 100
	} else if testing.Short() {
		t.Skip("race test skipped in -short mode")
	}
	h := newHarness(t)
	user := filepath.Join(h.work, "userwt")
	h.git("worktree", "add", "-q", "-b", "user-branch", user)
	userAdmin := filepath.Join(h.repo, ".git", "worktrees", "userwt")
	is.NoErr(os.Rename(user, user+"-unmounted"))
	agent := h.writeAgent("agent.sh", `echo "$GROVE_TASK_ID" > "f-$GROVE_TASK_ID.txt"`+"\n")

	h.startDaemon("--max-agents", "4", "--reap-every", "1s", "--reap-grace", "0s")
	start := time.Now()
	var ids []string
	for i := range n {
		apply := "auto"
		if i%3 == 0 {
			apply = "manual" // closed by hand below, next to the reaper
		}
		ids = append(ids, h.mustGrove("submit", "--repo", h.repo, "--apply", apply, "--", agent))
	}
	adminKept := func() bool { _, err := os.Stat(filepath.Join(userAdmin, "HEAD")); return err == nil }
	for i, id := range ids {
		if i%3 != 0 {
			continue
		}
		h.mustGrove("wait", id)
		h.mustGrove("discard", id)
		_, errOut, err, timedOut := h.groveIn(h.work, slow(3*time.Minute), "close", id)
		is.True(!timedOut)
		if err != nil { // the reaper or the discard's close may have been first: never a refusal
			is.True(!strings.Contains(errOut, "holds work"))
		}
		is.True(adminKept())
	}
	h.untilSettled(time.Minute, 15*time.Minute, "every task closed", func() (bool, string) {
		if !adminKept() {
			h.t.Fatal("the user's worktree lost its admin dir")
		}
		return h.closedProgress(ids)
	})
	t.Logf("%d tasks applied or discarded and closed next to a reaper every second in %s", n, time.Since(start).Round(time.Millisecond))
	h.until(30*time.Second, "nothing leaked", func() bool {
		for _, l := range h.leaks() {
			if !strings.Contains(l, "userwt") { // the user's record stays
				t.Logf("leak: %s", l)
				return false
			}
		}
		return true
	})
	is.True(adminKept())
	is.True(strings.Contains(h.git("worktree", "list"), "userwt"))
	for _, id := range ids {
		evs, err := h.store().Events(context.Background(), id, 0)
		is.NoErr(err)
		for _, e := range evs {
			if e.Kind == "close_refused" || e.Kind == "close_failed" || e.Kind == "reap_kept" {
				t.Errorf("task %s: %s %s", id, e.Kind, e.Message)
			}
		}
	}
	h.stopDaemon(syscall.SIGTERM)
}
