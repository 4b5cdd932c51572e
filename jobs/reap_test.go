package jobs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// reapEnv is a home with a store, one registered repository and a fixed
// clock for the rows' last_used_at.
type reapEnv struct {
	t    *testing.T
	ctx  context.Context
	d    *Deps
	st   *store.Store
	repo *gitops.Repo
	row  grove.Repo
	base time.Time // when every row was last used
}

func setGitEnv(t *testing.T) {
	for k, v := range map[string]string{
		"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
		"GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.com",
		"GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@example.com",
	} {
		t.Setenv(k, v)
	}
}

func newReapEnv(t *testing.T) *reapEnv {
	t.Helper()
	setGitEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	e := &reapEnv{t: t, ctx: ctx, base: time.Now().Truncate(time.Millisecond)}
	tmp := t.TempDir()
	home := filepath.Join(tmp, "home")
	st, err := store.Open(ctx, home, store.Options{Now: func() time.Time { return e.base }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	e.d, err = NewDeps(st, home, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "repo")
	gitT(t, "", "init", "-q", "-b", "main", dir)
	writeT(t, filepath.Join(dir, "README"), "hello\n")
	writeT(t, filepath.Join(dir, ".gitignore"), "*.secret\n")
	gitT(t, dir, "add", "-A")
	gitT(t, dir, "commit", "-q", "-m", "init")
	e.repo, err = gitops.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	e.row = grove.Repo{Path: e.repo.Root, CommonDir: e.repo.CommonDir, DefaultBranch: "main"}
	err = st.InTx(ctx, func(tx *store.Tx) error {
		e.row.ID, err = tx.UpsertRepo(ctx, e.row)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// task records a task in state with a workspace row and creates its
// worktree (as the pipeline would), returning the task id and path.
func (e *reapEnv) task(state grove.TaskState) (string, string) {
	e.t.Helper()
	id := grove.NewTaskID()
	path := e.d.WorktreePath(e.row, id)
	err := e.st.InTx(e.ctx, func(tx *store.Tx) error {
		if _, _, err := tx.InsertTask(e.ctx, grove.Task{ID: id, RepoID: e.row.ID, BaseRef: "main", TargetBranch: "main",
			Argv: []string{"agent"}, Apply: grove.ApplyManual, State: state}); err != nil {
			return err
		}
		_, err := tx.PutWorkspace(e.ctx, grove.Workspace{RepoID: e.row.ID, TaskID: id, Path: path,
			Branch: TaskBranch(id), State: grove.WorkspaceReady})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.repo.CreateWorktree(e.ctx, path, TaskBranch(id), "main"); err != nil {
		e.t.Fatal(err)
	}
	return id, path
}

func (e *reapEnv) reap(after time.Duration, dry bool) ReapReport {
	e.t.Helper()
	rep, err := Reap(e.ctx, e.d, e.base.Add(after), time.Hour, dry)
	if err != nil {
		e.t.Fatal(err)
	}
	return rep
}

func itemOf(rep ReapReport, path string) ReapItem {
	for _, it := range rep.Items {
		if it.Path == path {
			return it
		}
	}
	return ReapItem{}
}

func reasonsOf(it ReapItem) []string {
	var s []string
	for _, r := range it.Reasons {
		s = append(s, r.Reason)
	}
	return s
}

func (e *reapEnv) events(id string, kind string) int {
	e.t.Helper()
	evs, err := e.st.Events(e.ctx, id, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func (e *reapEnv) worktreeListed(path string) bool {
	e.t.Helper()
	wts, err := e.repo.Worktrees(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return slices.ContainsFunc(wts, func(w gitops.WorktreeEntry) bool { return canon(w.Path) == canon(path) })
}

func TestReapGrace(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, wt := e.task(grove.StateFailed)
	reviewID, reviewWT := e.task(grove.StateReview) // waits on a person: never a candidate
	_, runningWT := e.task(grove.StateRunning)
	appliedID, appliedWT := e.task(grove.StateApplied)

	rep := e.reap(30*time.Minute, false)
	is.Equal(itemOf(rep, wt).Action, ReapSkippedYoung)
	is.Equal(itemOf(rep, appliedWT).Action, ReapSkippedYoung)
	is.True(pathExists(wt))

	rep = e.reap(2*time.Hour, false)
	it := itemOf(rep, wt)
	is.Equal(it.Action, ReapRemoved)
	is.Equal(it.TaskID, id)
	is.Equal(it.Owner, "failed")
	// Idle is measured against the injected clock; the worktree's own
	// mtimes are real time, later than e.base by how long setup took.
	is.True(it.IdleSeconds >= 7200-int64(time.Since(e.base).Seconds())-1)
	is.True(!pathExists(wt))
	is.True(!e.worktreeListed(wt))
	ok, err := e.repo.IsLocalBranch(e.ctx, TaskBranch(id))
	is.NoErr(err)
	is.True(!ok) // the task's branch went with it
	ws, err := e.st.TaskWorkspace(e.ctx, id)
	is.NoErr(err)
	is.Equal(ws.State, grove.WorkspaceRemoved) // archived, not deleted
	is.Equal(e.events(id, "reaped"), 1)
	task, err := e.st.Task(e.ctx, id)
	is.NoErr(err)
	is.Equal(task.State, grove.StateFailed) // failed stays failed

	is.Equal(itemOf(rep, appliedWT).Action, ReapRemoved)
	task, err = e.st.Task(e.ctx, appliedID)
	is.NoErr(err)
	is.Equal(task.State, grove.StateApplied) // an applied task stays applied,
	ws, err = e.st.TaskWorkspace(e.ctx, appliedID)
	is.NoErr(err)
	is.Equal(ws.State, grove.WorkspaceRemoved) // its worktree removed

	for _, p := range []string{reviewWT, runningWT} {
		is.Equal(itemOf(rep, p).Path, "") // not even looked at
		is.True(pathExists(p))
	}
	ws, err = e.st.TaskWorkspace(e.ctx, reviewID)
	is.NoErr(err)
	is.Equal(ws.State, grove.WorkspaceReady)
}

// The gate scenarios through the reaper: only the clean worktree goes.
func TestReapGateScenarios(t *testing.T) {
	e := newReapEnv(t)
	var procs []*exec.Cmd
	t.Cleanup(func() {
		for _, c := range procs {
			c.Process.Kill()
			c.Wait()
		}
	})
	scenarios := []struct {
		name   string
		reason string
		setup  func(wt string)
	}{
		{"clean", "", func(string) {}},
		{"modified tracked", gitops.RiskDirty, func(wt string) { writeT(t, filepath.Join(wt, "README"), "edited\n") }},
		{"staged", gitops.RiskStaged, func(wt string) {
			writeT(t, filepath.Join(wt, "new.txt"), "staged\n")
			gitT(t, wt, "add", "new.txt")
		}},
		{"untracked", gitops.RiskUntracked, func(wt string) { writeT(t, filepath.Join(wt, "notes.txt"), "mine\n") }},
		{"ignored", gitops.RiskIgnored, func(wt string) { writeT(t, filepath.Join(wt, "key.secret"), "s3cr3t\n") }},
		{"hidden edit", gitops.RiskHiddenEdit, func(wt string) {
			gitT(t, wt, "update-index", "--assume-unchanged", "README")
			writeT(t, filepath.Join(wt, "README"), "hidden\n")
		}},
		{"merge in progress", gitops.RiskOperation, func(wt string) {
			writeT(t, filepath.Join(wt, "README"), "ours\n")
			gitT(t, wt, "commit", "-qam", "ours")
			gitT(t, wt, "checkout", "-qb", "theirs-"+filepath.Base(wt), "HEAD~1")
			writeT(t, filepath.Join(wt, "README"), "theirs\n")
			gitT(t, wt, "commit", "-qam", "theirs")
			gitT(t, wt, "checkout", "-q", "-")
			if err := exec.Command("git", "-C", wt, "merge", "-q", "theirs-"+filepath.Base(wt)).Run(); err == nil {
				t.Fatal("merge did not conflict")
			}
		}},
		{"detached commit", gitops.RiskDetached, func(wt string) {
			gitT(t, wt, "checkout", "-q", "--detach")
			gitT(t, wt, "commit", "-q", "--allow-empty", "-m", "detached")
		}},
		{"unapplied commit", gitops.RiskUnapplied, func(wt string) {
			gitT(t, wt, "commit", "-q", "--allow-empty", "-m", "mine")
		}},
		{"stash", gitops.RiskStash, func(wt string) {
			writeT(t, filepath.Join(wt, "README"), "stashed\n")
			gitT(t, wt, "stash", "-q")
		}},
		{"worktree ref", gitops.RiskWorktreeRefs, func(wt string) { gitT(t, wt, "update-ref", "refs/worktree/keep", "HEAD") }},
		{"locked", gitops.RiskLocked, func(wt string) { gitT(t, wt, "worktree", "lock", "--reason", "busy", wt) }},
		{"process inside", gitops.RiskProcess, func(wt string) {
			c := exec.Command("sleep", "600")
			c.Dir = wt
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			procs = append(procs, c)
		}},
	}
	paths := map[string]string{}
	for _, sc := range scenarios {
		_, wt := e.task(grove.StateFailed)
		sc.setup(wt)
		paths[sc.name] = wt
	}
	start := time.Now()
	rep := e.reap(2*time.Hour, false)
	t.Logf("reap pass over %d worktrees: %s", len(scenarios), time.Since(start).Round(time.Millisecond))
	at, err := e.st.AtRiskWorkspaces(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			is := is.New(t)
			it := itemOf(rep, paths[sc.name])
			if sc.reason == "" {
				is.Equal(it.Action, ReapRemoved)
				is.True(!pathExists(paths[sc.name]))
				return
			}
			is.Equal(it.Action, ReapKept)
			is.True(slices.Contains(reasonsOf(it), sc.reason)) // the reason is named
			is.True(pathExists(paths[sc.name]))
			is.True(slices.ContainsFunc(at, func(w store.OwnedWorkspace) bool {
				return w.Path == paths[sc.name] && strings.Contains(w.AtRisk, `"`+sc.reason+`"`)
			})) // recorded for grove ls --at-risk
			is.Equal(e.events(it.TaskID, "reap_kept"), 1)
		})
	}
	// A second pass keeps them again, without a second event.
	rep = e.reap(3*time.Hour, false)
	is := is.New(t)
	is.Equal(rep.Count(ReapKept), len(scenarios)-1)
	is.Equal(e.events(itemOf(rep, paths["stash"]).TaskID, "reap_kept"), 1)
}

func TestReapUnknownDirectories(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	repoDir := filepath.Dir(e.d.WorktreePath(e.row, "x"))

	// A plain directory with a process working in it.
	stray := filepath.Join(e.d.Home, "worktrees", "other-9", "stray")
	writeT(t, filepath.Join(stray, "file.txt"), "someone's\n")
	sleeper := exec.Command("sleep", "600")
	sleeper.Dir = stray
	is.NoErr(sleeper.Start())
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })

	// Worktrees of the known repository that no row has.
	busy := filepath.Join(repoDir, "tbusy")
	is.NoErr(e.repo.CreateWorktree(e.ctx, busy, "mine/busy", "main"))
	sleeper2 := exec.Command("sleep", "600")
	sleeper2.Dir = busy
	is.NoErr(sleeper2.Start())
	t.Cleanup(func() { sleeper2.Process.Kill(); sleeper2.Wait() })
	idle := filepath.Join(repoDir, "tidle")
	is.NoErr(e.repo.CreateWorktree(e.ctx, idle, "mine/idle", "main"))
	// And one outside the home: not the reaper's business.
	outside := filepath.Join(t.TempDir(), "outside")
	is.NoErr(e.repo.CreateWorktree(e.ctx, outside, "mine/outside", "main"))

	rep := e.reap(30*time.Minute, false)
	is.Equal(itemOf(rep, busy).Action, ReapSkippedYoung) // unknown dirs age by mtime
	is.Equal(itemOf(rep, stray).Action, ReapKept)

	rep = e.reap(2*time.Hour, false)
	it := itemOf(rep, stray)
	is.Equal(it.Action, ReapKept)
	is.Equal(it.Owner, "unknown")
	is.Equal(reasonsOf(it), []string{ReasonNotWorktree, gitops.RiskProcess})
	is.Equal(read(t, filepath.Join(stray, "file.txt")), "someone's\n")

	it = itemOf(rep, busy)
	is.Equal(it.Action, ReapKept)
	is.Equal(reasonsOf(it), []string{gitops.RiskProcess})
	is.True(pathExists(filepath.Join(busy, "README")))
	at, err := e.st.AtRiskWorkspaces(e.ctx)
	is.NoErr(err)
	is.Equal(len(at), 1) // adopted, so grove ls --at-risk shows it
	is.Equal(at[0].Path, busy)
	is.Equal(at[0].State, WorkspaceOrphan)
	is.Equal(at[0].Branch, "mine/busy")

	is.Equal(itemOf(rep, idle).Action, ReapRemoved)
	is.True(!pathExists(idle))
	ok, err := e.repo.IsLocalBranch(e.ctx, "mine/idle")
	is.NoErr(err)
	is.True(ok) // not grove's branch: kept

	is.Equal(itemOf(rep, outside).Path, "")
	is.True(pathExists(outside))

	// The adopted row is looked at again as a row, and still kept.
	rep = e.reap(3*time.Hour, false)
	is.Equal(itemOf(rep, busy).Action, ReapKept)
	is.True(pathExists(busy))
}

func TestReapPrunesMissingDirectory(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, wt := e.task(grove.StateCanceled)
	is.NoErr(os.RemoveAll(wt)) // deleted by hand
	is.True(e.worktreeListed(wt))

	rep := e.reap(0, false) // no grace needed: nothing is left to lose there
	is.Equal(itemOf(rep, wt).Action, ReapPruned)
	is.True(!e.worktreeListed(wt))
	ws, err := e.st.TaskWorkspace(e.ctx, id)
	is.NoErr(err)
	is.Equal(ws.State, grove.WorkspaceRemoved)
	live, err := e.st.LiveWorkspaces(e.ctx)
	is.NoErr(err)
	is.Equal(len(live), 0)
	is.Equal(e.events(id, "reap_pruned"), 1)
	ok, err := e.repo.IsLocalBranch(e.ctx, TaskBranch(id))
	is.NoErr(err)
	is.True(!ok) // the gate saw nothing on it: it goes, as with a close

	// Again: nothing left to do.
	rep = e.reap(time.Hour, false)
	is.Equal(len(rep.Items), 0)
}

func TestReapDryRunChangesNothing(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	_, clean := e.task(grove.StateDiscarded)
	_, dirty := e.task(grove.StateFailed)
	writeT(t, filepath.Join(dirty, "README"), "edited\n")
	_, gone := e.task(grove.StateFailed)
	is.NoErr(os.RemoveAll(gone))
	unknown := filepath.Join(filepath.Dir(clean), "tunknown")
	is.NoErr(e.repo.CreateWorktree(e.ctx, unknown, "mine/u", "main"))
	writeT(t, filepath.Join(unknown, "x"), "untracked\n")

	snapshot := func() string {
		live, err := e.st.LiveWorkspaces(e.ctx)
		is.NoErr(err)
		wts, err := e.repo.Worktrees(e.ctx)
		is.NoErr(err)
		tasks, err := e.st.ListTasks(e.ctx, store.TaskFilter{})
		is.NoErr(err)
		var b strings.Builder
		for _, w := range live {
			b.WriteString(w.Path + " " + w.State + " " + w.AtRisk + "\n")
		}
		for _, w := range wts {
			b.WriteString(w.Path + " " + w.Branch + "\n")
		}
		for _, task := range tasks {
			b.WriteString(task.ID + " " + string(task.State) + "\n")
			evs, err := e.st.Events(e.ctx, task.ID, 0)
			is.NoErr(err)
			for _, ev := range evs {
				b.WriteString(ev.Kind + "\n")
			}
		}
		b.WriteString(gitT(t, e.repo.Root, "for-each-ref"))
		return b.String()
	}
	before := snapshot()
	rep := e.reap(2*time.Hour, true)
	is.True(rep.DryRun)
	is.Equal(itemOf(rep, clean).Action, ReapWouldRemove)
	is.Equal(itemOf(rep, dirty).Action, ReapKept)
	is.Equal(reasonsOf(itemOf(rep, dirty)), []string{gitops.RiskDirty})
	is.Equal(itemOf(rep, gone).Action, ReapWouldPrune)
	is.Equal(itemOf(rep, unknown).Action, ReapKept)
	is.Equal(snapshot(), before)
	for _, p := range []string{clean, dirty, unknown} {
		is.True(pathExists(p))
	}

	// The real pass does what the dry run said.
	rep = e.reap(2*time.Hour, false)
	is.Equal(itemOf(rep, clean).Action, ReapRemoved)
	is.Equal(itemOf(rep, dirty).Action, ReapKept)
	is.Equal(itemOf(rep, gone).Action, ReapPruned)
	is.Equal(itemOf(rep, unknown).Action, ReapKept)
	is.True(snapshot() != before)
}

func TestReapArgsUnique(t *testing.T) {
	is := is.New(t)
	opts := ReapArgs{}.InsertOpts()
	is.Equal(opts.Queue, QueueMaintenance)
	is.True(len(opts.UniqueOpts.ByState) > 0) // one pass queued at a time
	is.Equal(ReapArgs{}.Kind(), "reap")
}

func gitT(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func writeT(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A warm-pool worktree belongs to the pool however long it waits; one the
// pool gave up on (stale) is the reaper's.
func TestReapLeavesWarmPool(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	dir := filepath.Dir(e.d.WorktreePath(e.row, "x"))
	paths := map[string]string{}
	for _, state := range []string{grove.WorkspacePool, grove.WorkspacePoolCreating, grove.WorkspaceStale} {
		p := filepath.Join(dir, "p-"+state)
		err := e.st.InTx(e.ctx, func(tx *store.Tx) error {
			_, err := tx.PutWorkspace(e.ctx, grove.Workspace{RepoID: e.row.ID, Path: p, Branch: "grove/pool/" + state, State: state})
			return err
		})
		is.NoErr(err)
		is.NoErr(e.repo.CreateWorktree(e.ctx, p, "grove/pool/"+state, "main"))
		paths[state] = p
	}
	rep := e.reap(48*time.Hour, false)
	is.Equal(itemOf(rep, paths[grove.WorkspacePool]).Path, "")
	is.Equal(itemOf(rep, paths[grove.WorkspacePoolCreating]).Path, "")
	is.True(pathExists(paths[grove.WorkspacePool]))
	is.Equal(itemOf(rep, paths[grove.WorkspaceStale]).Action, ReapRemoved)
	is.True(!pathExists(paths[grove.WorkspaceStale]))
}
