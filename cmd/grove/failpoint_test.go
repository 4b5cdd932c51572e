package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// crashPoint is one deterministic crash: the daemon dies (SIGKILL) at
// failpoint name; warm runs the daemon with a warm pool (pool points).
type crashPoint struct {
	name string
	warm bool
	// fast points run in every `go test`; the rest under GROVE_TORTURE.
	fast bool
	// claim: the point is on a warm claim's path; a first task (before the
	// crashing daemon starts) fills the pool, so that the task claims.
	claim bool
}

// crashPoints lists every failpoint of create, run, diff, apply and pool
// moves (grep -rn 'grove.Failpoint(' for the call sites).
var crashPoints = []crashPoint{
	{name: "create.after-branch"},
	{name: "create.after-worktree-add", fast: true},
	{name: "create.after-checkout"},
	{name: "create.before-handoff"},
	{name: "run.after-supervisor-start", fast: true},
	{name: "run.before-run-commit"},
	{name: "diff.after-commit", fast: true},
	{name: "apply.after-merge-tree"},
	{name: "apply.after-commit"},
	{name: "apply.after-checkout", fast: true},
	{name: "apply.after-ref-move"},
	{name: "apply.before-handoff"},
	{name: "pool.after-take", warm: true},
	{name: "pool.after-advance", warm: true, fast: true},
	{name: "pool.before-return", warm: true},
	{name: "rename.after-log", warm: true, claim: true, fast: true},
	{name: "rename.after-new-ref", warm: true, claim: true, fast: true},
	{name: "rename.after-heads", warm: true, claim: true, fast: true},
	{name: "rename.after-old-ref", warm: true, claim: true, fast: true},
}

// TestCrashPoints: for each failpoint, the daemon dies there while it runs
// an auto-applied task; a new daemon without the failpoint finishes the
// task (closed, its change on main exactly once) or refuses it with its
// work kept; the agent ran exactly once; no branch, worktree directory or
// git admin dir is left that grove does not record. A few points run by
// default; GROVE_TORTURE=1 (make torture) runs all of them.
func TestCrashPoints(t *testing.T) {
	all := os.Getenv("GROVE_TORTURE") != ""
	if testing.Short() {
		t.Skip("crash points skipped in -short mode")
	}
	for _, cp := range crashPoints {
		if !cp.fast && !all {
			continue
		}
		t.Run(cp.name, func(t *testing.T) { crashAt(t, cp) })
	}
}

func crashAt(t *testing.T, cp crashPoint) {
	is := is.New(t)
	h := newHarness(t)
	counter := filepath.Join(h.work, "counter")
	agent := h.writeAgent("agent.sh", `echo "$GROVE_TASK_ID" >> "$COUNTER"
echo "$GROVE_TASK_ID" > "f-$GROVE_TASK_ID.txt"
`)
	args := []string{}
	if cp.warm {
		args = append(args, "--warm", "1")
	}
	if cp.claim {
		h.startDaemon(args...)
		h.mustGrove("wait", h.mustGrove("submit", "--repo", h.repo, "--", "true"))
		h.until(60*time.Second, "a pool entry", func() bool { return len(h.poolEntries()) == 1 })
		h.stopDaemon(syscall.SIGTERM)
	}
	died := h.startCrashingDaemon(cp.name, args...)
	id := h.mustGrove("submit", "--repo", h.repo, "--apply", "auto", "--env", "COUNTER="+counter, "--", agent)
	select {
	case st := <-died:
		ws, ok := st.Sys().(syscall.WaitStatus)
		is.True(ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL) // died at the failpoint
	case <-time.After(slow(60 * time.Second)):
		h.dumpState()
		t.Fatalf("the daemon never reached failpoint %s", cp.name)
	}
	h.startDaemon(args...)
	h.until(60*time.Second, "task settled after the crash", func() bool {
		st := h.task(id).State
		return h.closed(id) || (st.Settled() && st != grove.StateApplied)
	})
	h.stopDaemon(syscall.SIGTERM)

	task := h.task(id)
	if !h.closed(id) {
		// Refused: its work must be kept, in its worktree or at its ref.
		ws, err := h.store().TaskWorkspace(context.Background(), id)
		is.NoErr(err)
		_, statErr := os.Stat(filepath.Join(ws.Path, "f-"+id+".txt"))
		ref := strings.TrimSpace(h.git("for-each-ref", "--format=%(objectname)", "refs/grove/tasks/"+id))
		t.Logf("%s: task %s ended %s (%s); worktree file: %v, ref %q", cp.name, id, task.State, task.Error, statErr, ref)
		is.True(statErr == nil || ref != "")
	} else {
		// Applied once, on main.
		is.Equal(strings.TrimSpace(h.git("show", "main:f-"+id+".txt")), id)
		is.Equal(strings.Count(h.git("log", "--format=%s", "main"), "task "+id), 1)
	}
	is.Equal(countLines(t, counter), map[string]int{id: 1}) // the agent ran once
	h.noLeaks()
}

// startCrashingDaemon starts `grove serve` armed with failpoint and returns
// a channel that receives its exit status. It does not wait for the lock:
// the daemon may die before a test could see it.
func (h *harness) startCrashingDaemon(failpoint string, args ...string) <-chan *os.ProcessState {
	h.t.Helper()
	logf, err := os.OpenFile(filepath.Join(h.work, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("grove", append([]string{"serve"}, args...)...)
	cmd.Dir = h.work
	cmd.Env = append(append([]string{}, h.env...), grove.FailpointEnv+"="+failpoint)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.daemon = cmd
	died := make(chan *os.ProcessState, 1)
	go func() { _ = cmd.Wait(); died <- cmd.ProcessState }()
	return died
}

// noLeaks checks, with no daemon running, that every branch, worktree and
// directory grove made is one it still records as live: nothing leaked.
func (h *harness) noLeaks() {
	h.t.Helper()
	live := map[string]bool{} // paths and branches of live workspaces
	wss, err := h.store().LiveWorkspaces(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, ws := range wss {
		real, err := filepath.EvalSymlinks(ws.Path)
		if err != nil {
			real = ws.Path
		}
		live[real], live[ws.Path], live["refs/heads/"+ws.Branch] = true, true, true
	}
	for _, b := range strings.Fields(h.git("for-each-ref", "--format=%(refname)", "refs/heads/")) {
		if b != "refs/heads/main" && !live[b] {
			h.t.Errorf("leaked branch %s", b)
		}
	}
	wts := 0
	for _, l := range strings.Split(h.git("worktree", "list", "--porcelain"), "\n") {
		if p, ok := strings.CutPrefix(l, "worktree "); ok {
			wts++
			if p != h.repo && !live[p] {
				h.t.Errorf("leaked worktree %s", p)
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(h.home, "worktrees", "*", "*"))
	for _, d := range dirs {
		if !live[d] {
			h.t.Errorf("leaked directory %s", d)
		}
	}
	admin, _ := filepath.Glob(filepath.Join(h.repo, ".git", "worktrees", "*"))
	if len(admin) != wts-1 {
		h.t.Errorf("%d git admin dirs for %d worktrees: %v", len(admin), wts-1, admin)
	}
}
