package gitops

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// dirTree reads everything under dir, as `diff -r` compares it and more:
// every directory (empty ones too), regular file (content and executable
// bit), symlink (target), nested .git directories included, by path.
func dirTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			m[rel+"/"] = info.Mode().Perm().String()
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			m[rel] = "link:" + target
			return err
		default:
			b, err := os.ReadFile(p)
			m[rel] = fmt.Sprintf("%v:%s", info.Mode().Perm(), b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// diffTrees names the paths where a and b differ (for a readable failure).
func diffTrees(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, "only before: "+k)
		} else if v != w {
			d = append(d, "differs: "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "only after: "+k)
		}
	}
	return d
}

// fullState is what a restore must give back exactly.
type fullState struct {
	status, stash, log, list     string
	nestedStatus, nestedLog      string
	subStatus, subLog, branchTip string
	files                        map[string]string
}

func fullStateOf(t *testing.T, r *Repo, wt, branch string) fullState {
	t.Helper()
	s := fullState{
		status: git(t, wt, "status", "--porcelain=v2", "--ignored", "-uall", "--branch"),
		stash:  git(t, wt, "stash", "list", "--format=%H %gs"),
		log:    git(t, wt, "log", "--all", "--format=%H %P %s"),
		list:   git(t, r.Root, "worktree", "list", "--porcelain"),
	}
	if exists(filepath.Join(wt, "nested", ".git")) {
		s.nestedStatus = git(t, filepath.Join(wt, "nested"), "status", "--porcelain=v2", "-uall", "--branch")
		s.nestedLog = git(t, filepath.Join(wt, "nested"), "log", "--all", "--format=%H %s")
	}
	if exists(filepath.Join(wt, "sub", ".git")) {
		s.subStatus = git(t, filepath.Join(wt, "sub"), "status", "--porcelain=v2", "-uall")
		s.subLog = git(t, filepath.Join(wt, "sub"), "log", "--all", "--format=%H %s")
	}
	s.branchTip, _ = r.RefCommit(context.Background(), "refs/heads/"+branch)
	s.files = dirTree(t, wt) // after the git commands: any index refresh is done
	return s
}

func assertSameState(t *testing.T, before, after fullState) {
	t.Helper()
	if d := diffTrees(before.files, after.files); len(d) > 0 {
		t.Fatalf("files differ after restore: %v", d)
	}
	before.files, after.files = nil, nil
	if fmt.Sprintf("%#v", before) != fmt.Sprintf("%#v", after) {
		t.Fatalf("state differs after restore:\nbefore %+v\nafter  %+v", before, after)
	}
}

// richWorktree makes a worktree holding every kind of work: commits on its
// branch, a staged and an unstaged change, untracked and ignored files, a
// stash, an initialised submodule (its module store lives in the admin
// dir), and a nested repository with commits of its own.
func richWorktree(t *testing.T) (*Repo, string) {
	t.Helper()
	r, wt := gateSetup(t)
	subSrc := filepath.Join(t.TempDir(), "subsrc")
	git(t, "", "init", "-q", "-b", "main", subSrc)
	write(t, filepath.Join(subSrc, "lib.txt"), "lib\n")
	git(t, subSrc, "add", "-A")
	git(t, subSrc, "commit", "-q", "-m", "lib")
	git(t, wt, "-c", "protocol.file.allow=always", "submodule", "add", "-q", subSrc, "sub")
	git(t, wt, "commit", "-q", "-m", "add submodule")
	write(t, filepath.Join(wt, "src", "a.txt"), "one\ntwo\nthree\nfour\n")
	git(t, wt, "commit", "-q", "-am", "work on the branch")
	write(t, filepath.Join(wt, "stashed.txt"), "stashed\n")
	git(t, wt, "stash", "push", "-q", "-u", "-m", "my stash")
	write(t, filepath.Join(wt, "staged.txt"), "staged\n")
	git(t, wt, "add", "staged.txt")
	write(t, filepath.Join(wt, "README"), "unstaged edit\n")
	write(t, filepath.Join(wt, "untracked.txt"), "untracked\n")
	write(t, filepath.Join(wt, "key.secret"), "hunter2\n")
	write(t, filepath.Join(wt, "sub", "lib.txt"), "edited in the submodule\n")
	nested := filepath.Join(wt, "nested")
	git(t, "", "init", "-q", "-b", "trunk", nested)
	write(t, filepath.Join(nested, "n.txt"), "nested\n")
	git(t, nested, "add", "-A")
	git(t, nested, "commit", "-q", "-m", "nested commit")
	write(t, filepath.Join(nested, "n.txt"), "nested edit\n")
	if err := os.Symlink("README", filepath.Join(wt, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(wt, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	return r, wt
}

// retiredEntry checks Retire's result: git no longer lists the worktree,
// its directory is gone, the branch is deleted and its commits pinned.
func retiredEntry(t *testing.T, r *Repo, wt, branch, tip string, e TrashEntry) {
	t.Helper()
	is := is.New(t)
	is.True(e.Dir != "")
	is.Equal(e.Manifest.Step, StepDone)
	is.True(gone(wt))
	is.True(!strings.Contains(git(t, r.Root, "worktree", "list", "--porcelain"), wt))
	is.Equal(git(t, r.Root, "branch", "--list", branch), "")
	pinned, err := r.RefCommit(context.Background(), TrashRefPrefix+e.Manifest.Entry+"/tip")
	is.NoErr(err)
	is.Equal(pinned, tip)
	m, err := readManifest(e.Dir)
	is.NoErr(err)
	is.Equal(m.Path, wt)
	is.Equal(m.Branch, branch)
	if m.Size >= 0 {
		return // an entry of git's record alone, measured at once (it is small)
	}
	// A retired worktree is measured by the first listing, not the retire.
	list, err := ListTrash(filepath.Dir(e.Dir), time.Now())
	is.NoErr(err)
	found := false
	for _, info := range list {
		if info.Dir == e.Dir {
			found = true
			is.True(info.Size > 0)
			m, err := readManifest(e.Dir)
			is.NoErr(err)
			is.Equal(m.Size, info.Size) // and kept for the next one
		}
	}
	is.True(found)
}

// The safe path: a clean worktree the gate approved goes to the trash and
// comes back exactly as it was.
func TestTrashRestoreSafe(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	trash := filepath.Join(t.TempDir(), "trash")
	write(t, filepath.Join(wt, "work.txt"), "committed work\n")
	git(t, wt, "add", "-A")
	git(t, wt, "commit", "-q", "-m", "work")
	write(t, filepath.Join(wt, "node_modules", "dep", "index.js"), "kept ignored\n")
	git(t, r.Root, "update-ref", "refs/tasks/t", "grove/g")
	rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g", AppliedRefs: []string{"refs/tasks/t"}})
	is.True(rep.Safe)
	before := fullStateOf(t, r, wt, "grove/g")

	e, err := r.Retire(ctx, wt, "grove/g", trash, rep, RetireOptions{Manifest: TrashManifest{Task: "t1", Reason: "close"}})
	is.NoErr(err)
	retiredEntry(t, r, wt, "grove/g", before.branchTip, e)
	is.Equal(e.Manifest.Task, "t1")

	dir, err := FindTrashEntry(trash, "t1") // by task id
	is.NoErr(err)
	is.Equal(dir, e.Dir)
	_, err = RestoreTrash(ctx, dir, "")
	is.NoErr(err)
	assertSameState(t, before, fullStateOf(t, r, wt, "grove/g"))
	is.Equal(trashEntries(t, trash), nil)
	is.Equal(git(t, r.Root, "for-each-ref", TrashRefPrefix), "") // unpinned
}

// The forced path: a worktree full of work goes to the trash as it is and
// comes back with its index, stash, submodule and nested repository.
func TestTrashRestoreForced(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := richWorktree(t)
	trash := filepath.Join(t.TempDir(), "trash")
	rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g"})
	is.True(!rep.Safe)
	before := fullStateOf(t, r, wt, "grove/g")
	gd, err := GitDirOf(wt)
	is.NoErr(err)
	is.True(exists(filepath.Join(gd, "modules", "sub"))) // the premise: the module store is in the admin dir

	// Without Force: refused, nothing moved.
	_, err = r.Retire(ctx, wt, "grove/g", trash, rep, RetireOptions{})
	is.True(errors.Is(err, grove.ErrAtRisk))
	assertSameState(t, before, fullStateOf(t, r, wt, "grove/g"))

	e, err := r.Retire(ctx, wt, "grove/g", trash, rep, RetireOptions{Force: true, Manifest: TrashManifest{Task: "t2"}})
	is.NoErr(err)
	retiredEntry(t, r, wt, "grove/g", before.branchTip, e)
	is.True(e.Manifest.Forced)
	is.True(!exists(gd))

	// The branch comes back at its tip; a branch moved elsewhere refuses.
	git(t, r.Root, "branch", "grove/g", "main")
	_, err = RestoreTrash(ctx, e.Dir, "")
	is.True(errors.Is(err, grove.ErrConflict))
	is.True(grove.HintOf(err) != "")
	is.True(gone(wt))
	git(t, r.Root, "branch", "-D", "grove/g")
	_, err = RestoreTrash(ctx, e.Dir, "")
	is.NoErr(err)
	assertSameState(t, before, fullStateOf(t, r, wt, "grove/g"))
	is.Equal(trashEntries(t, trash), nil)
}

// The missing path: a retire that died after moving the directory leaves
// the worktree "missing"; the next removal finishes that entry (it never
// forgets the record of a worktree that is in the trash), and the restore
// gives it all back.
func TestTrashRestoreMissing(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := richWorktree(t)
	trash := filepath.Join(t.TempDir(), "trash")
	before := fullStateOf(t, r, wt, "grove/g")

	err := crashAt(t, "retire.after-move", "retire-force", r.Root, wt, "grove/g", trash)
	is.True(err != nil)
	is.True(gone(wt))
	is.Equal(len(trashEntries(t, trash)), 1)
	rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g"})
	is.True(rep.Has(RiskMissing))
	gd := filepath.Join(r.CommonDir, "worktrees", "wt")
	is.True(exists(filepath.Join(gd, "index")))

	// While another removal holds that entry (the reaper next to a close),
	// the record is not touched.
	name := trashEntries(t, trash)[0]
	f, ok, err := tryFlock(filepath.Join(trash, name, trashLock))
	is.NoErr(err)
	is.True(ok)
	_, err = r.Retire(ctx, wt, "grove/g", trash, rep, RetireOptions{})
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), "being moved into the trash"))
	is.True(exists(filepath.Join(gd, "index")))
	f.Close()

	e, err := r.Retire(ctx, wt, "grove/g", trash, rep, RetireOptions{})
	is.NoErr(err)
	retiredEntry(t, r, wt, "grove/g", before.branchTip, e)
	is.Equal(len(trashEntries(t, trash)), 1) // that same entry

	_, err = RestoreTrash(ctx, e.Dir, "")
	is.NoErr(err)
	assertSameState(t, before, fullStateOf(t, r, wt, "grove/g"))
}

// A worktree whose directory is really gone: only its own record moves
// into the trash; restore gives the record back (HEAD, index, reflog).
func TestTrashMissingRecordOnly(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	trash := filepath.Join(t.TempDir(), "trash")
	git(t, wt, "commit", "-q", "--allow-empty", "-m", "only here")
	tip := git(t, wt, "rev-parse", "HEAD")
	is.NoErr(os.RemoveAll(wt))
	e, err := r.Retire(ctx, wt, "grove/g", trash, r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g"}), RetireOptions{})
	is.NoErr(err)
	is.True(e.Manifest.Missing)
	retiredEntry(t, r, wt, "grove/g", tip, e)
	is.True(exists(filepath.Join(e.Dir, trashAdmin, "HEAD")))
	_, err = RestoreTrash(ctx, e.Dir, "")
	is.NoErr(err)
	is.Equal(git(t, wt, "rev-parse", "HEAD"), tip)
	is.Equal(git(t, wt, "rev-parse", "--abbrev-ref", "HEAD"), "grove/g")
}

// Restore elsewhere (--path) and under a fresh admin id when the old one
// is taken.
func TestTrashRestoreElsewhere(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	trash := filepath.Join(t.TempDir(), "trash")
	write(t, filepath.Join(wt, "untracked.txt"), "u\n")
	git(t, wt, "stash", "push", "-q", "-u")
	write(t, filepath.Join(wt, "dirty.txt"), "d\n")
	gd, err := GitDirOf(wt)
	is.NoErr(err)
	e, err := r.Retire(ctx, wt, "grove/g", trash, Report{}, RetireOptions{Force: true})
	is.NoErr(err)
	// Another worktree takes the admin dir's name meanwhile.
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/other", "main"))
	is.True(exists(gd))
	_, err = RestoreTrash(ctx, e.Dir, wt)
	is.True(errors.Is(err, grove.ErrConflict)) // something is at wt
	dest := filepath.Join(t.TempDir(), "back")
	_, err = RestoreTrash(ctx, e.Dir, dest)
	is.NoErr(err)
	is.Equal(git(t, dest, "status", "--porcelain"), "?? dirty.txt")
	is.Equal(git(t, dest, "rev-parse", "--abbrev-ref", "HEAD"), "grove/g")
	is.Equal(len(strings.Split(git(t, dest, "stash", "list"), "\n")), 1)
	gd2, err := GitDirOf(dest)
	is.NoErr(err)
	is.True(gd2 != gd)
	is.Equal(git(t, wt, "rev-parse", "--abbrev-ref", "HEAD"), "grove/other")
}

// makeEntry retires a fresh worktree (forced) and backdates its manifest.
func makeEntry(t *testing.T, r *Repo, trash, name string, age time.Duration, size int64) TrashEntry {
	t.Helper()
	ctx := ctxT(t)
	wt := filepath.Join(t.TempDir(), name)
	if err := r.CreateWorktree(ctx, wt, "grove/"+name, "main"); err != nil {
		t.Fatal(err)
	}
	e, err := r.Retire(ctx, wt, "grove/"+name, trash, Report{}, RetireOptions{Force: true, Manifest: TrashManifest{Task: name}})
	if err != nil {
		t.Fatal(err)
	}
	t2 := &trashEntry{dir: e.Dir, name: filepath.Base(e.Dir)}
	e.Manifest.Time = time.Now().Add(-age)
	e.Manifest.Size = size
	if err := t2.write(&e.Manifest); err != nil {
		t.Fatal(err)
	}
	return e
}

// Retention: older than keep goes, within it stays; over the budget the
// oldest go first, never one younger than an hour (reported instead).
func TestPurgeTrashRetention(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	trash := filepath.Join(t.TempDir(), "trash")
	old := makeEntry(t, r, trash, "old", 30*time.Hour, 100)
	mid1 := makeEntry(t, r, trash, "mid1", 5*time.Hour, 100)
	mid2 := makeEntry(t, r, trash, "mid2", 3*time.Hour, 100)
	young := makeEntry(t, r, trash, "young", 10*time.Minute, 1000)
	now := time.Now()

	rep, err := PurgeTrash(ctx, trash, now, 24*time.Hour, 0)
	is.NoErr(err)
	is.Equal(len(rep.Purged), 1)
	is.Equal(rep.Purged[0].Dir, old.Dir)
	is.Equal(rep.Purged[0].Why, "expired")
	is.True(!exists(old.Dir))
	is.Equal(git(t, r.Root, "for-each-ref", "--format=%(refname)", TrashRefPrefix+old.Manifest.Entry), "")
	is.True(exists(mid1.Dir) && exists(mid2.Dir) && exists(young.Dir))
	is.Equal(rep.Bytes, int64(1200))

	// Budget 500: mid1 (oldest) goes, then mid2; young stays though the
	// trash is still over budget, and is reported.
	rep, err = PurgeTrash(ctx, trash, now, 24*time.Hour, 500)
	is.NoErr(err)
	is.Equal(len(rep.Purged), 2)
	is.Equal(rep.Purged[0].Dir, mid1.Dir)
	is.Equal(rep.Purged[1].Dir, mid2.Dir)
	is.Equal(rep.Purged[1].Why, "over budget")
	is.Equal(len(rep.Young), 1)
	is.Equal(rep.Young[0].Dir, young.Dir)
	is.True(exists(young.Dir))
	is.Equal(rep.Bytes, int64(1000))

	// An unreadable manifest or a KEPT marker is never purged.
	is.NoErr(os.WriteFile(filepath.Join(young.Dir, trashManifest), []byte("{garbage"), 0o600))
	rep, err = PurgeTrash(ctx, trash, now.Add(48*time.Hour), time.Hour, 1)
	is.NoErr(err)
	is.Equal(len(rep.Purged), 0)
	is.Equal(len(rep.Kept), 1)
	is.True(exists(young.Dir))
	// By hand it goes.
	_, err = PurgeEntry(ctx, young.Dir)
	is.NoErr(err)
	is.Equal(trashEntries(t, trash), nil)
}

// A user's own worktree whose directory was moved away keeps its admin
// dir through every kind of removal of grove's worktrees.
func TestTrashKeepsUsersMissingWorktree(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	trash := filepath.Join(t.TempDir(), "trash")
	disk := t.TempDir()
	user := filepath.Join(disk, "user")
	git(t, r.Root, "worktree", "add", "-q", "--detach", user)
	git(t, user, "commit", "-q", "--allow-empty", "-m", "only in this worktree's HEAD")
	detached := git(t, user, "rev-parse", "HEAD")
	userGD, err := GitDirOf(user)
	is.NoErr(err)
	is.NoErr(os.Rename(disk, filepath.Join(t.TempDir(), "away")))
	kept := func() {
		t.Helper()
		is.Equal(strings.TrimSpace(read(t, filepath.Join(userGD, "HEAD"))), detached)
		is.True(exists(filepath.Join(userGD, "index")))
	}
	for i, how := range []string{"safe", "force", "missing", "crash"} {
		g := filepath.Join(t.TempDir(), fmt.Sprint("g", i))
		branch := fmt.Sprint("grove/g", i)
		is.NoErr(r.CreateWorktree(ctx, g, branch, "main"))
		switch how {
		case "safe":
			rep := r.AtRisk(ctx, g, GateOptions{Branch: branch})
			is.True(rep.Safe)
			_, err = r.Retire(ctx, g, branch, trash, rep, RetireOptions{})
		case "force":
			_, err = r.Retire(ctx, g, branch, trash, Report{}, RetireOptions{Force: true})
		case "missing":
			is.NoErr(os.RemoveAll(g))
			_, err = r.Retire(ctx, g, branch, trash, Report{}, RetireOptions{})
		case "crash":
			is.True(crashAt(t, "retire.after-move", "retire-force", r.Root, g, branch, trash) != nil)
			kept()
			is.NoErr(SweepTrash(trash))
		}
		is.NoErr(err)
		kept()
	}
	_, err = PurgeTrash(ctx, trash, time.Now().Add(100*time.Hour), time.Hour, 1)
	is.NoErr(err)
	kept()
	is.Equal(trashEntries(t, trash), nil)
}

// A purge never deletes an entry a retire is still working on: the
// retire holds the entry's lock from its first step to its last.
func TestPurgeSkipsEntryBeingRetired(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	trash := filepath.Join(t.TempDir(), "trash")
	const n = 6
	var wts []string
	for i := range n {
		wt := filepath.Join(t.TempDir(), fmt.Sprint("w", i))
		is.NoErr(r.CreateWorktree(ctx, wt, fmt.Sprint("grove/w", i), "main"))
		write(t, filepath.Join(wt, "work.txt"), "uncommitted\n")
		wts = append(wts, wt)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	purges := 0
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Everything is "expired" for this purge, whatever its age.
			_, _ = PurgeTrash(ctx, trash, time.Now().Add(1000*time.Hour), time.Nanosecond, 1)
			purges++
		}
	})
	entries := make([]TrashEntry, n)
	for i, wt := range wts {
		e, err := r.Retire(ctx, wt, fmt.Sprint("grove/w", i), trash, Report{}, RetireOptions{Force: true})
		is.NoErr(err)
		entries[i] = e
	}
	close(stop)
	wg.Wait()
	t.Logf("%d purges ran next to %d retires", purges, n)
	is.True(purges > 0)
	// Each retire finished: its entry was complete when (if) purged, and
	// nothing half-moved is left anywhere.
	for i, wt := range wts {
		is.True(gone(wt))
		is.Equal(entries[i].Manifest.Step, StepDone)
	}
	is.Equal(len(strings.Split(git(t, r.Root, "worktree", "list", "--porcelain", "-z"), "\x00\x00")), 2) // main only
	for _, name := range trashEntries(t, trash) {
		m, err := readManifest(filepath.Join(trash, name))
		is.NoErr(err)
		is.Equal(m.Step, StepDone)
		is.True(exists(filepath.Join(trash, name, trashWorktree)))
		is.True(exists(filepath.Join(trash, name, trashAdmin)))
	}
}

// crashAt runs a helper action in a child process with the failpoint
// armed; the child dies there (SIGKILL). It returns the child's error.
func crashAt(t *testing.T, failpoint, action string, args ...string) error {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "GITOPS_TEST_HELPER="+action, grove.FailpointEnv+"="+failpoint)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("helper %s did not reach failpoint %s: %s", action, failpoint, out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != -1 {
		t.Fatalf("helper %s with failpoint %s: %v\n%s", action, failpoint, err, out)
	}
	return err
}

// A crash at any step boundary of a retire, a purge or a restore leaves
// an entry the next operation finishes: after a retire's crash, a sweep
// (daemon start) completes the retire and the restore gives everything
// back; after a restore's crash, restoring again finishes; after a purge's
// crash, the next purge finishes.
func TestTrashCrashAtEveryStep(t *testing.T) {
	for _, fp := range []string{"retire.after-pin", "retire.after-move", "retire.after-admin-move",
		"retire.after-unregister", "retire.after-branch-delete"} {
		t.Run(fp, func(t *testing.T) {
			is := is.New(t)
			ctx := ctxT(t)
			r, wt := richWorktree(t)
			trash := filepath.Join(t.TempDir(), "trash")
			before := fullStateOf(t, r, wt, "grove/g")
			crashAt(t, fp, "retire-force", r.Root, wt, "grove/g", trash)
			is.NoErr(SweepTrash(trash))
			if fp == "retire.after-pin" { // nothing was moved: the entry is dropped
				is.Equal(trashEntries(t, trash), nil)
				assertSameState(t, before, fullStateOf(t, r, wt, "grove/g"))
				is.Equal(git(t, r.Root, "for-each-ref", TrashRefPrefix), "")
				return
			}
			names := trashEntries(t, trash)
			is.Equal(len(names), 1)
			dir := filepath.Join(trash, names[0])
			m, err := readManifest(dir)
			is.NoErr(err)
			is.Equal(m.Step, StepDone)
			is.True(gone(wt))
			is.Equal(git(t, r.Root, "branch", "--list", "grove/g"), "")
			_, err = RestoreTrash(ctx, dir, "")
			is.NoErr(err)
			assertSameState(t, before, fullStateOf(t, r, wt, "grove/g"))
		})
	}
	for _, fp := range []string{"restore.after-mark", "restore.after-move", "restore.after-admin-move", "restore.after-relink"} {
		t.Run(fp, func(t *testing.T) {
			is := is.New(t)
			ctx := ctxT(t)
			r, wt := richWorktree(t)
			trash := filepath.Join(t.TempDir(), "trash")
			before := fullStateOf(t, r, wt, "grove/g")
			e, err := r.Retire(ctx, wt, "grove/g", trash, Report{}, RetireOptions{Force: true})
			is.NoErr(err)
			crashAt(t, fp, "restore", e.Dir)
			_, err = RestoreTrash(ctx, e.Dir, "")
			is.NoErr(err)
			assertSameState(t, before, fullStateOf(t, r, wt, "grove/g"))
			is.Equal(trashEntries(t, trash), nil)
		})
	}
	for _, fp := range []string{"purge.after-mark", "purge.after-unpin"} {
		t.Run(fp, func(t *testing.T) {
			is := is.New(t)
			ctx := ctxT(t)
			r, wt := gateSetup(t)
			trash := filepath.Join(t.TempDir(), "trash")
			_, err := r.Retire(ctx, wt, "grove/g", trash, Report{}, RetireOptions{Force: true})
			is.NoErr(err)
			crashAt(t, fp, "purge-all", trash)
			is.Equal(len(trashEntries(t, trash)), 1) // still there, marked
			// The next purge finishes it, whatever the retention says.
			_, err = PurgeTrash(ctx, trash, time.Now(), 1000*time.Hour, 0)
			is.NoErr(err)
			is.Equal(trashEntries(t, trash), nil)
			is.Equal(git(t, r.Root, "for-each-ref", TrashRefPrefix), "")
		})
	}
}
