package jobs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// adminDir is git's administrative dir of the worktree at path ("" if git
// records none).
func (e *reapEnv) adminDir(path string) string {
	e.t.Helper()
	ents, _ := os.ReadDir(filepath.Join(e.repo.CommonDir, "worktrees"))
	for _, ent := range ents {
		gd := filepath.Join(e.repo.CommonDir, "worktrees", ent.Name())
		b, err := os.ReadFile(filepath.Join(gd, "gitdir"))
		if err == nil && canon(filepath.Dir(strings.TrimSpace(string(b)))) == canon(path) {
			return gd
		}
	}
	return ""
}

func (e *reapEnv) workspace(id string) grove.Workspace {
	e.t.Helper()
	ws, err := e.st.TaskWorkspace(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return ws
}

func (e *reapEnv) swap(wsID int64, from, to string) bool {
	e.t.Helper()
	var ok bool
	if err := e.st.InTx(e.ctx, func(tx *store.Tx) (err error) {
		ok, err = tx.SwapWorkspaceState(e.ctx, wsID, from, to)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return ok
}

func (e *reapEnv) branchExists(name string) bool {
	e.t.Helper()
	ok, err := e.repo.IsLocalBranch(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return ok
}

// Issue 10, item 1: a grove worktree whose directory is gone has its own
// record forgotten, and only that: a user's worktree whose directory was
// moved away (an unmounted disk) keeps its admin dir (HEAD, index). The old
// reaper ran `git worktree prune` and dropped both.
func TestReapForgetsOnlyItsOwnRecord(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, wt := e.task(grove.StateCanceled)
	is.NoErr(os.RemoveAll(wt))

	user := filepath.Join(filepath.Dir(e.repo.Root), "userwt")
	gitT(t, e.repo.Root, "worktree", "add", "-q", "-b", "user-branch", user)
	userAdmin := e.adminDir(user)
	is.True(userAdmin != "")
	is.NoErr(os.Rename(user, user+"-unmounted"))

	rep := e.reap(0, false)
	is.Equal(itemOf(rep, wt).Action, ReapPruned)
	is.Equal(e.adminDir(wt), "") // grove's own record: forgotten
	is.True(!e.worktreeListed(wt))
	is.Equal(e.workspace(id).State, grove.WorkspaceRemoved)

	_, err := os.Stat(filepath.Join(userAdmin, "HEAD"))
	is.NoErr(err)                   // the user's record: kept
	is.True(e.worktreeListed(user)) // git still lists it (prunable)
	is.True(e.branchExists("user-branch"))
}

// Issue 10, item 2: the reaper runs while a close is moving a worktree
// into the trash. It skips the workspace (claimed: `removing`, its removal
// lock held), so git's record stays for the close to remove; once the
// close lets go, the next pass finishes the removal. The old reaper saw
// the directory "gone", pruned, and the close then failed on a worktree git
// no longer knew.
func TestReapSkipsAWorktreeBeingRemoved(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, wt := e.task(grove.StateApplied)
	ws := e.workspace(id)
	admin := e.adminDir(wt)
	is.True(admin != "")

	// A close mid-way: claimed, its lock held, the directory in the trash.
	unlock, ok, err := e.d.lockRemoval(e.ctx, ws.ID, false)
	is.NoErr(err)
	is.True(ok)
	is.True(e.swap(ws.ID, grove.WorkspaceReady, grove.WorkspaceRemoving))
	moved := filepath.Join(e.d.TrashDir(), "x", "worktree")
	is.NoErr(os.MkdirAll(filepath.Dir(moved), 0o755))
	is.NoErr(os.Rename(wt, moved))

	rep := e.reap(2*time.Hour, false)
	is.Equal(itemOf(rep, wt).Action, ReapSkippedBusy)
	_, err = os.Stat(filepath.Join(admin, "HEAD"))
	is.NoErr(err) // git's record of it is intact
	is.Equal(e.workspace(id).State, grove.WorkspaceRemoving)
	is.Equal(e.task0(id).State, grove.StateApplied)
	is.Equal(e.events(id, "reap_pruned"), 0)

	// The close is cut short: the worktree back in place, the lock free.
	is.NoErr(os.Rename(moved, wt))
	unlock(false)
	rep = e.reap(2*time.Hour, false)
	is.Equal(e.workspace(id).State, grove.WorkspaceRemoved) // resumed and finished
	is.Equal(e.task0(id).State, grove.StateApplied)         // the outcome stays
	is.Equal(e.adminDir(wt), "")
	is.True(!e.branchExists(TaskBranch(id)))
	_, err = os.Stat(wt)
	is.True(errors.Is(err, os.ErrNotExist))
	is.Equal(len(rep.Items), 0) // archived by the resume before the pass looked
}

// closeJob runs the close worker as River would.
func (e *reapEnv) closeJob(id string, force bool) error {
	w := &CloseWorker{d: e.d}
	return w.Work(e.ctx, &river.Job[CloseArgs]{JobRow: &rivertype.JobRow{Attempt: 1, MaxAttempts: stageAttempts},
		Args: CloseArgs{TaskID: id, Force: force}})
}

// Issue 10, item 6: a close refused because a process worked in the
// worktree is closed by the next reaper pass once the process has exited,
// whatever the grace: the task asked for it. Before, the worktree stayed
// kept, its stale "process (pids …)" report never checked again.
func TestRefusedCloseFinishesWhenProcessExits(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, wt := e.task(grove.StateApplied)
	client, err := NewInsertClient(e.st)
	is.NoErr(err)
	intents := &Intents{Store: e.st, Client: client, Home: e.d.Home}
	is.NoErr(intents.Close(e.ctx, id, false, false))

	sleeper := exec.Command("sleep", "600")
	sleeper.Dir = wt
	is.NoErr(sleeper.Start())
	var once sync.Once
	stop := func() { once.Do(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }) }
	t.Cleanup(stop)

	is.NoErr(e.closeJob(id, false)) // a refusal is an answer, not a job error
	is.Equal(e.events(id, "close_refused"), 1)
	ws := e.workspace(id)
	is.Equal(ws.State, grove.WorkspaceReady) // the claim was released
	is.True(strings.Contains(ws.AtRisk, `"process"`))
	is.Equal(e.task0(id).State, grove.StateApplied)

	// Still there: the reaper keeps it, and says so once.
	rep := e.reap(0, false)
	is.Equal(reasonsOf(itemOf(rep, wt)), []string{"process"})
	is.Equal(e.task0(id).State, grove.StateApplied)

	stop()
	rep = e.reap(0, false) // idle 0 s: the grace does not hold back an asked close
	is.Equal(itemOf(rep, wt).Action, ReapRemoved)
	is.Equal(e.task0(id).State, grove.StateApplied) // the outcome stays
	is.Equal(e.workspace(id).State, grove.WorkspaceRemoved)
	is.Equal(e.adminDir(wt), "")
	is.True(!e.branchExists(TaskBranch(id)))
}

// Issue 10, item 6: a removal a crash interrupted (the row left
// `removing`, its remover gone) is finished by ResumeRemovals (the
// daemon's start, every reaper pass), idempotently.
func TestInterruptedRemovalResumes(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, wt := e.task(grove.StateApplied)
	ws := e.workspace(id)
	is.True(e.swap(ws.ID, grove.WorkspaceReady, grove.WorkspaceRemoving)) // claimed, then the crash

	n, err := ResumeRemovals(e.ctx, e.d)
	is.NoErr(err)
	is.Equal(n, 1)
	is.Equal(e.task0(id).State, grove.StateApplied) // the outcome stays
	is.Equal(e.workspace(id).State, grove.WorkspaceRemoved)
	is.Equal(e.adminDir(wt), "")
	is.True(!e.branchExists(TaskBranch(id)))
	n, err = ResumeRemovals(e.ctx, e.d)
	is.NoErr(err)
	is.Equal(n, 0)

	// Interrupted with work in it: refused, the row back to ready, the
	// work kept and reported.
	id2, wt2 := e.task(grove.StateFailed)
	writeT(t, filepath.Join(wt2, "notes.txt"), "mine\n")
	ws2 := e.workspace(id2)
	is.True(e.swap(ws2.ID, grove.WorkspaceReady, grove.WorkspaceRemoving))
	n, err = ResumeRemovals(e.ctx, e.d)
	is.NoErr(err)
	is.Equal(n, 0)
	ws2 = e.workspace(id2)
	is.Equal(ws2.State, grove.WorkspaceReady)
	is.True(strings.Contains(ws2.AtRisk, "untracked"))
	is.Equal(read(t, filepath.Join(wt2, "notes.txt")), "mine\n")
}

// Remove's contract: a refusal is a *grove.UserError wrapping ErrAtRisk
// with the reasons, the report on the row and the claim released; the owner
// check runs in the claim; two removers never both remove.
func TestRemoveContract(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, wt := e.task(grove.StateDiscarded)
	writeT(t, filepath.Join(wt, "notes.txt"), "mine\n")
	w := func() store.OwnedWorkspace {
		return store.OwnedWorkspace{Workspace: e.workspace(id), RepoPath: e.repo.Root, TaskState: grove.StateDiscarded}
	}
	r := e.d.removalOf(w(), closable)
	r.RefusedEvent = "close_refused"
	_, err := e.d.Remove(e.ctx, r)
	var ue *grove.UserError
	is.True(errors.As(err, &ue))
	is.True(errors.Is(err, grove.ErrAtRisk))
	is.True(strings.Contains(err.Error(), "untracked (notes.txt)"))
	is.Equal(e.workspace(id).State, grove.WorkspaceReady)
	is.Equal(e.events(id, "close_refused"), 1)

	// The owner came back: nothing done.
	r = e.d.removalOf(w(), []grove.TaskState{grove.StateApplied})
	res, err := e.d.Remove(e.ctx, r)
	is.NoErr(err)
	is.True(strings.Contains(res.Skipped, ReasonOwnerBack))
	is.Equal(e.workspace(id).State, grove.WorkspaceReady)

	// Forced: snapshot first, then removed; recorded.
	r = e.d.removalOf(w(), closable)
	r.Force, r.Event, r.Message = true, "closed", "worktree removed"
	res, err = e.d.Remove(e.ctx, r)
	is.NoErr(err)
	is.True(res.Removed)
	is.Equal(res.Snapshot, SnapshotRef(id))
	is.Equal(e.workspace(id).SnapshotRef, SnapshotRef(id))
	is.Equal(e.task0(id).State, grove.StateDiscarded) // the outcome stays

	// Two removers at once: exactly one removes, the other skips.
	id2, _ := e.task(grove.StateApplied)
	w2 := store.OwnedWorkspace{Workspace: e.workspace(id2), RepoPath: e.repo.Root, TaskState: grove.StateApplied}
	var wg sync.WaitGroup
	results := make([]RemoveResult, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Go(func() { results[i], errs[i] = e.d.Remove(e.ctx, e.d.removalOf(w2, closable)) })
	}
	wg.Wait()
	removed := 0
	for i := range results {
		is.NoErr(errs[i])
		if results[i].Removed {
			removed++
		} else {
			is.True(results[i].Skipped == SkipBusy || results[i].Skipped == SkipGone)
		}
	}
	is.Equal(removed, 1)
}

// A forced removal whose snapshot refuses (here: the worktree was moved by
// hand next to its old path, so git's record still holds its index and
// HEAD) is a recorded refusal, not a failure River retries: the row goes
// back to ready with the reason, the moved files and git's record stay.
func TestForcedRemovalSnapshotRefusal(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, wt := e.task(grove.StateDiscarded)
	writeT(t, filepath.Join(wt, "notes.txt"), "mine\n")
	admin := e.adminDir(wt)
	is.True(admin != "")
	moved := wt + "-moved"
	is.NoErr(os.Rename(wt, moved))

	w := store.OwnedWorkspace{Workspace: e.workspace(id), RepoPath: e.repo.Root, TaskState: grove.StateDiscarded}
	r := e.d.removalOf(w, closable)
	r.Force, r.RefusedEvent = true, "close_refused"
	res, err := e.d.Remove(e.ctx, r)
	is.True(errors.Is(err, grove.ErrAtRisk))
	is.True(strings.Contains(err.Error(), RiskSnapshotRefused))
	is.True(!res.Removed)
	is.Equal(e.workspace(id).State, grove.WorkspaceReady) // claim released
	is.True(strings.Contains(e.workspace(id).AtRisk, RiskSnapshotRefused))
	is.Equal(e.events(id, "close_refused"), 1)
	b, err := os.ReadFile(filepath.Join(moved, "notes.txt"))
	is.NoErr(err)
	is.Equal(string(b), "mine\n")
	_, err = os.Stat(admin)
	is.NoErr(err) // git's record of it is kept: git worktree repair finds it
}

// A close whose only risk is a process about to exit (a supervisor's last
// sweep, a git command finishing) waits for it instead of being refused
// until the next reaper pass.
func TestCloseWaitsForAProcessAboutToExit(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, wt := e.task(grove.StateApplied)
	cmd := exec.Command("sh", "-c", `exec 3<"$1/README"; exec sleep 1`, "sh", wt)
	cmd.Dir = "/"
	is.NoErr(cmd.Start())
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	fdDir := fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid)
	for end := time.Now().Add(time.Minute); ; {
		open := false
		ents, _ := os.ReadDir(fdDir)
		for _, ent := range ents {
			if l, _ := os.Readlink(filepath.Join(fdDir, ent.Name())); strings.HasSuffix(l, "/README") {
				open = true
			}
		}
		if open {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the reader never opened its file")
		}
		time.Sleep(5 * time.Millisecond)
	}

	w := store.OwnedWorkspace{Workspace: e.workspace(id), RepoPath: e.repo.Root, TaskState: grove.StateApplied}
	r := e.d.removalOf(w, closable)
	r.Wait, r.RefusedEvent = true, "close_refused"
	res, err := e.d.Remove(e.ctx, r)
	is.NoErr(err)
	is.True(res.Removed)
	is.Equal(e.events(id, "close_refused"), 0)
	select {
	case <-done: // the reader had exited before the worktree went
	default:
		t.Fatal("removed while the reader still held a file in it")
	}
}
