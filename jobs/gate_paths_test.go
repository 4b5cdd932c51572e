package jobs

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// gateScenario is work a careful tester leaves in a worktree that no
// destructive path may lose. setup lays it into wt and returns the nested
// repositories it made (relative to wt) and, for a reason that can go away
// by itself (a writer holding a file open), a func that clears it.
type gateScenario struct {
	name   string
	reason string
	setup  func(t *testing.T, wt string) (nested []string, clear func())
}

func gateScenarios() []gateScenario {
	return []gateScenario{
		{"nested repo untracked", gitops.RiskNested, func(t *testing.T, wt string) ([]string, func()) {
			nestedRepo(t, filepath.Join(wt, "nested"))
			return []string{"nested"}, nil
		}},
		{"nested repo in ignored vendor", gitops.RiskNested, func(t *testing.T, wt string) ([]string, func()) {
			writeT(t, filepath.Join(wt, ".gitignore"), "*.secret\nvendor/\n")
			gitT(t, wt, "commit", "-qam", "ignore vendor")
			nestedRepo(t, filepath.Join(wt, "vendor", "lib"))
			return []string{"vendor/lib"}, nil
		}},
		{"reflog-only commit", gitops.RiskReflog, func(t *testing.T, wt string) ([]string, func()) {
			gitT(t, wt, "checkout", "-q", "--detach")
			writeT(t, filepath.Join(wt, "README"), "detached work\n")
			gitT(t, wt, "commit", "-qam", "detached work")
			gitT(t, wt, "checkout", "-q", "-")
			return nil, nil
		}},
		{"merge in progress", gitops.RiskOperation, func(t *testing.T, wt string) ([]string, func()) {
			theirs := "theirs-" + filepath.Base(wt)
			writeT(t, filepath.Join(wt, "README"), "ours\n")
			gitT(t, wt, "commit", "-qam", "ours")
			gitT(t, wt, "checkout", "-qb", theirs, "HEAD~1")
			writeT(t, filepath.Join(wt, "README"), "theirs\n")
			gitT(t, wt, "commit", "-qam", "theirs")
			gitT(t, wt, "checkout", "-q", "-")
			if err := exec.Command("git", "-C", wt, "merge", "-q", theirs).Run(); err == nil {
				t.Fatal("merge did not conflict")
			}
			// MERGE_HEAD is now the only thing that holds the incoming commit.
			gitT(t, wt, "branch", "-q", "-D", theirs)
			return nil, nil
		}},
		{"fd writer outside", gitops.RiskProcess, func(t *testing.T, wt string) ([]string, func()) {
			return nil, fdWriter(t, filepath.Join(wt, "README"))
		}},
	}
}

// nestedRepo makes a repository at dir with one commit no other
// repository has.
func nestedRepo(t *testing.T, dir string) {
	t.Helper()
	gitT(t, "", "init", "-q", "-b", "main", dir)
	writeT(t, filepath.Join(dir, "lib.txt"), "nested work of "+dir+"\n")
	gitT(t, dir, "add", "-A")
	gitT(t, dir, "commit", "-q", "-m", "nested work")
}

// fdWriter starts a process, working in /, that holds file open for
// appending (without writing yet) and waits until its descriptor is open.
// The returned func kills it and waits (idempotent; also run at cleanup).
func fdWriter(t *testing.T, file string) func() {
	t.Helper()
	c := exec.Command("sh", "-c", `exec 3>>"$1"; exec sleep 600`, "sh", file)
	c.Dir = "/"
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { _ = c.Process.Kill(); _ = c.Wait() }) }
	t.Cleanup(stop)
	fdDir := filepath.Join("/proc", strconv.Itoa(c.Process.Pid), "fd")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if holdsOpen(fdDir, file) {
			return stop
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("writer never opened %s", file)
		}
		time.Sleep(5 * time.Millisecond) // polling /proc: no event to wait on
	}
}

// holdsOpen: some link in fdDir names file (the sleep replaced the shell,
// keeping its descriptor 3).
func holdsOpen(fdDir, file string) bool {
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	for _, ent := range ents {
		if l, err := os.Readlink(filepath.Join(fdDir, ent.Name())); err == nil && canon(l) == canon(file) {
			return true
		}
	}
	return false
}

// commitSet is every commit reachable (refs, every worktree's HEAD and
// reflogs, MERGE_HEAD) in the repositories at dirs that exist.
func commitSet(t *testing.T, dirs ...string) map[string]bool {
	t.Helper()
	set := map[string]bool{}
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, ".git")); err != nil {
			continue
		}
		for _, c := range strings.Fields(gitT(t, dir, "rev-list", "--all", "--reflog")) {
			set[c] = true
		}
		if out, err := exec.Command("git", "-C", dir, "rev-parse", "-q", "--verify", "MERGE_HEAD").Output(); err == nil {
			set[strings.TrimSpace(string(out))] = true
		}
	}
	return set
}

// before is the commits that exist before a destructive path: the main
// repository's, the worktree's (its HEAD, reflog, MERGE_HEAD) and every
// nested repository's.
func (e *reapEnv) before(wt string, nested []string) map[string]bool {
	e.t.Helper()
	dirs := []string{e.repo.Root, wt}
	for _, n := range nested {
		dirs = append(dirs, filepath.Join(wt, n))
	}
	return commitSet(e.t, dirs...)
}

// assertKept fails for each commit of want that is not reachable from a
// ref in the repositories at dirs.
func assertKept(t *testing.T, want map[string]bool, dirs ...string) {
	t.Helper()
	got := commitSet(t, dirs...)
	for c := range want {
		if !got[c] {
			t.Errorf("commit %s is no longer reachable from any ref in %v", c, dirs)
		}
	}
}

// gatePathEnv is a fresh home and repository for one scenario on one path.
func gatePathEnv(t *testing.T) *reapEnv {
	e := newReapEnv(t)
	e.base = time.Now().Add(-time.Minute).Truncate(time.Millisecond) // rows are stamped with it
	return e
}

// nestedDirs is wt's nested repositories as absolute paths, and wt.
func nestedDirs(wt string, nested []string) []string {
	dirs := []string{wt}
	for _, n := range nested {
		dirs = append(dirs, filepath.Join(wt, n))
	}
	return dirs
}

// The scenarios of issue 9 through every jobs-level destructive path
// (all of them go through Deps.Remove): the reaper past its grace, the
// reaper once the reason went away, session close with and without
// --force (then restore), and the warm pool dropping an entry. Every
// commit that existed before is reachable from a ref after.
func TestGatePaths(t *testing.T) {
	for _, sc := range gateScenarios() {
		t.Run(sc.name, func(t *testing.T) {
			t.Run("reaper", func(t *testing.T) { gateReaper(t, sc) })
			t.Run("session close", func(t *testing.T) { gateSessionClose(t, sc) })
			t.Run("pool shrink", func(t *testing.T) { gatePoolShrink(t, sc) })
		})
	}
}

// The reaper past the grace keeps the worktree, records the reasons on the
// row and says "kept"; once a reason that can clear has cleared, the next
// pass removes it into the trash, which pins its commits.
func gateReaper(t *testing.T, sc gateScenario) {
	e := gatePathEnv(t)
	id, wt := e.task(grove.StateFailed)
	nested, clear := sc.setup(t, wt)
	want := e.before(wt, nested)

	rep := e.reap(2*time.Hour, false)
	it := itemOf(rep, wt)
	if it.Action != ReapKept {
		t.Fatalf("reaper: action %q, want kept (reasons %v)", it.Action, reasonsOf(it))
	}
	if !slices.Contains(reasonsOf(it), sc.reason) {
		t.Fatalf("reaper: reasons %v, want %s", reasonsOf(it), sc.reason)
	}
	if ws := e.workspace(id); ws.State != grove.WorkspaceReady || !strings.Contains(ws.AtRisk, `"`+sc.reason+`"`) {
		t.Fatalf("row after the reaper: state %s, at risk %s", ws.State, ws.AtRisk)
	}
	if e.events(id, "reap_kept") != 1 {
		t.Fatal("no reap_kept event")
	}
	if !pathExists(wt) {
		t.Fatal("worktree gone after a kept reap")
	}
	assertKept(t, want, append([]string{e.repo.Root}, nestedDirs(wt, nested)...)...)

	if clear == nil {
		return
	}
	clear()
	rep = e.reap(3*time.Hour, false)
	if it := itemOf(rep, wt); it.Action != ReapRemoved {
		t.Fatalf("reaper after the reason cleared: action %q (reasons %v), want removed", it.Action, reasonsOf(it))
	}
	if pathExists(wt) || e.workspace(id).State != grove.WorkspaceRemoved {
		t.Fatal("worktree not removed")
	}
	list, err := gitops.ListTrash(e.d.TrashDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	entry := trashOf(t, list, func(m gitops.TrashManifest) bool { return m.Task == id })
	assertKept(t, want, e.repo.Root) // refs/grove/trash/ pins them
	// The trash entry gives the worktree back as it was.
	if _, err := gitops.RestoreTrash(e.ctx, entry, ""); err != nil {
		t.Fatalf("restore trash entry %s: %v", entry, err)
	}
	assertKept(t, want, append([]string{e.repo.Root}, nestedDirs(wt, nested)...)...)
}

// trashOf is the entry of list whose manifest matches (a fatal error when
// there is none).
func trashOf(t *testing.T, list []gitops.TrashInfo, match func(gitops.TrashManifest) bool) string {
	t.Helper()
	for _, ti := range list {
		if match(ti.Manifest) {
			return ti.Dir
		}
	}
	t.Fatalf("no such trash entry in %+v", list)
	return ""
}

// Session close without --force refuses and keeps everything; with
// --force it snapshots to the session's ref and moves the worktree to the
// trash; restoring the snapshot gives every commit back.
func gateSessionClose(t *testing.T, sc gateScenario) {
	e := gatePathEnv(t)
	key := "s" + strings.ToLower(grove.NewTaskID())
	base := strings.TrimSpace(gitT(t, e.repo.Root, "rev-parse", "HEAD"))
	sess := grove.Session{ID: key, RepoID: e.row.ID, RepoPath: e.repo.Root, BaseCommit: base, TargetBranch: "main"}
	if err := e.st.InTx(e.ctx, func(tx *store.Tx) error { return tx.InsertSession(e.ctx, sess) }); err != nil {
		t.Fatal(err)
	}
	ws, err := e.d.ensureSessionWorktree(e.ctx, sess)
	if err != nil {
		t.Fatal(err)
	}
	wt := ws.Path
	nested, clear := sc.setup(t, wt)
	want := e.before(wt, nested)
	w := &SessionWorker{d: e.d}

	if err := w.close(e.ctx, sess, false); err != nil {
		t.Fatalf("close: %v", err)
	}
	row := e.sessionRow(ws.ID)
	if row.State != grove.WorkspaceReady || !strings.Contains(row.AtRisk, `"`+sc.reason+`"`) || !pathExists(wt) {
		t.Fatalf("close without --force: state %s, at risk %s, worktree there %v", row.State, row.AtRisk, pathExists(wt))
	}
	if e.sessionEvents(key, "close_refused") != 1 {
		t.Fatal("no close_refused event")
	}
	assertKept(t, want, append([]string{e.repo.Root}, nestedDirs(wt, nested)...)...)

	if err := w.close(e.ctx, sess, true); err != nil {
		t.Fatalf("close --force: %v", err)
	}
	row = e.sessionRow(ws.ID)
	ref := "refs/grove/snapshots/session-" + key
	if row.State != grove.WorkspaceRemoved || row.SnapshotRef != ref || pathExists(wt) {
		t.Fatalf("close --force: state %s, snapshot %q, worktree there %v", row.State, row.SnapshotRef, pathExists(wt))
	}
	list, err := gitops.ListTrash(e.d.TrashDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	entry := trashOf(t, list, func(m gitops.TrashManifest) bool { return m.Session == key })
	if clear != nil {
		clear()
	}
	// The snapshot alone gives the work back: restore it elsewhere.
	dest := filepath.Join(t.TempDir(), "restored")
	if _, err := e.repo.RestoreWith(e.ctx, ref, dest, "restored-"+key); err != nil {
		t.Fatalf("restore %s: %v", ref, err)
	}
	assertKept(t, want, append([]string{e.repo.Root}, nestedDirs(dest, nested)...)...)
	// So does the trash entry, where the worktree was.
	if _, err := gitops.RestoreTrash(e.ctx, entry, ""); err != nil {
		t.Fatalf("restore trash entry %s: %v", entry, err)
	}
	assertKept(t, want, append([]string{e.repo.Root}, nestedDirs(wt, nested)...)...)
}

// sessionEvents counts session key's events of kind.
func (e *reapEnv) sessionEvents(key, kind string) int {
	e.t.Helper()
	evs, err := e.st.SessionEvents(e.ctx, key)
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

// sessionRow is workspace id's row, live or archived.
func (e *reapEnv) sessionRow(id int64) grove.Workspace {
	e.t.Helper()
	var ws grove.Workspace
	if err := e.st.Read(e.ctx, func(tx *store.Tx) (err error) {
		ws, _, err = tx.Workspace(e.ctx, id)
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return ws
}

// The warm pool dropping an entry (a smaller --warm) refuses an entry at
// risk: it becomes stale, kept, its report recorded.
func gatePoolShrink(t *testing.T, sc gateScenario) {
	e := gatePathEnv(t)
	wt := filepath.Join(filepath.Dir(e.d.WorktreePath(e.row, "x")), "pool-"+strings.ToLower(grove.NewTaskID()))
	branch := "grove/pool/" + filepath.Base(wt)
	var ws grove.Workspace
	if err := e.st.InTx(e.ctx, func(tx *store.Tx) (err error) {
		ws, err = tx.PutWorkspace(e.ctx, grove.Workspace{RepoID: e.row.ID, Path: wt, Branch: branch, State: grove.WorkspacePool})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.repo.CreateWorktree(e.ctx, wt, branch, "main"); err != nil {
		t.Fatal(err)
	}
	nested, _ := sc.setup(t, wt)
	want := e.before(wt, nested)

	if err := e.d.dropEntry(e.ctx, e.repo, ws); err != nil {
		t.Fatalf("drop entry: %v", err)
	}
	row := e.sessionRow(ws.ID)
	if row.State != grove.WorkspaceStale || !strings.Contains(row.AtRisk, `"`+sc.reason+`"`) || !pathExists(wt) {
		t.Fatalf("pool shrink: state %s, at risk %s, worktree there %v", row.State, row.AtRisk, pathExists(wt))
	}
	if !e.branchExists(branch) {
		t.Fatal("pool entry's branch deleted")
	}
	assertKept(t, want, append([]string{e.repo.Root}, nestedDirs(wt, nested)...)...)
}
