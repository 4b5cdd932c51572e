package gitops

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// wtState is everything about a worktree that a refused removal must leave
// exactly as it was.
type wtState struct {
	files    map[string]string
	status   string
	head     string
	branch   string // tip of the worktree's branch ("" if none)
	list     string
	adminDir map[string]string
}

func wtStateOf(t *testing.T, r *Repo, wt, branch string) wtState {
	t.Helper()
	gd, err := GitDirOf(wt)
	if err != nil {
		t.Fatal(err)
	}
	s := wtState{
		files:  treeFiles(t, wt),
		status: git(t, wt, "status", "--porcelain=v2", "--ignored", "-uall", "--branch"),
		head:   git(t, wt, "rev-parse", "HEAD"),
		list:   git(t, r.Root, "worktree", "list", "--porcelain"),
	}
	s.branch, err = r.RefCommit(context.Background(), "refs/heads/"+branch)
	if err != nil {
		t.Fatal(err)
	}
	s.adminDir = map[string]string{}
	for _, f := range []string{"HEAD", "index", "gitdir", "locked", "logs/HEAD"} {
		if b, err := os.ReadFile(filepath.Join(gd, f)); err == nil {
			s.adminDir[f] = string(b)
		}
	}
	return s
}

// trashEntries lists what is left in the trash directory.
func trashEntries(t *testing.T, trash string) []string {
	t.Helper()
	ents, err := os.ReadDir(trash)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// Between the gate and RetireWorktree the worktree may change. The moved
// worktree is re-checked as the gate checks it, with the gate's own
// options, and its HEAD and branch must be where the gate saw them:
// otherwise it is moved back, exactly as it was.
func TestRetireWorktreeRechecksTheMovedWorktree(t *testing.T) {
	newCommit := func(t *testing.T, r *Repo) string {
		tree := git(t, r.Root, "rev-parse", "main^{tree}")
		return git(t, r.Root, "commit-tree", "-p", "main", "-m", "elsewhere", tree)
	}
	for _, tc := range []struct {
		name   string
		opt    GateOptions
		before func(t *testing.T, r *Repo, wt string) // before the gate
		change func(t *testing.T, r *Repo, wt string) // after the gate
		want   string                                 // in the refusal; "" means removed
	}{
		{name: "untracked file", want: "untracked (new.txt)", change: func(t *testing.T, _ *Repo, wt string) {
			write(t, filepath.Join(wt, "new.txt"), "new work\n")
		}},
		{name: "modified file", want: "dirty (README)", change: func(t *testing.T, _ *Repo, wt string) {
			write(t, filepath.Join(wt, "README"), "edited\n")
		}},
		{name: "ignored file", want: "ignored (key.secret)", change: func(t *testing.T, _ *Repo, wt string) {
			write(t, filepath.Join(wt, "key.secret"), "hunter2\n")
		}},
		{name: "ignored file the gate's options keep", change: func(t *testing.T, _ *Repo, wt string) {
			write(t, filepath.Join(wt, "node_modules", "dep", "index.js"), "x")
		}},
		{name: "ignored file the gate's options do not keep", opt: GateOptions{KeepIgnored: []string{}},
			want: "ignored (node_modules/)", change: func(t *testing.T, _ *Repo, wt string) {
				write(t, filepath.Join(wt, "node_modules", "dep", "index.js"), "x")
			}},
		{name: "edit hidden from status", want: "hidden_edit (README (assume-unchanged))", change: func(t *testing.T, _ *Repo, wt string) {
			git(t, wt, "update-index", "--assume-unchanged", "README")
			write(t, filepath.Join(wt, "README"), "hidden edit\n")
		}},
		{name: "stashed work", want: "stash (1 stash entry made on grove/g)", change: func(t *testing.T, _ *Repo, wt string) {
			write(t, filepath.Join(wt, "new.txt"), "stashed\n")
			git(t, wt, "stash", "push", "-q", "-u")
		}},
		{name: "worktree ref", want: "worktree_refs (refs/worktree/keep)", change: func(t *testing.T, _ *Repo, wt string) {
			git(t, wt, "update-ref", "refs/worktree/keep", "HEAD")
		}},
		{name: "lock", want: "locked (busy)", change: func(t *testing.T, r *Repo, wt string) {
			git(t, r.Root, "worktree", "lock", "--reason", "busy", wt)
		}},
		{name: "new commit", want: "HEAD moved from", change: func(t *testing.T, _ *Repo, wt string) {
			git(t, wt, "commit", "-q", "--allow-empty", "-m", "new work")
		}},
		{name: "detached HEAD moved", want: "HEAD moved from",
			before: func(t *testing.T, _ *Repo, wt string) { git(t, wt, "checkout", "-q", "--detach") },
			change: func(t *testing.T, _ *Repo, wt string) {
				git(t, wt, "commit", "-q", "--allow-empty", "-m", "detached work")
			}},
		{name: "branch moved, HEAD not", want: "branch grove/g moved from",
			before: func(t *testing.T, _ *Repo, wt string) { git(t, wt, "checkout", "-q", "--detach") },
			change: func(t *testing.T, r *Repo, wt string) {
				git(t, r.Root, "update-ref", "refs/heads/grove/g", newCommit(t, r))
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			ctx := ctxT(t)
			r, wt := gateSetup(t)
			trash := filepath.Join(t.TempDir(), "trash")
			if tc.before != nil {
				tc.before(t, r, wt)
			}
			opt := tc.opt
			opt.Branch = "grove/g"
			rep := r.AtRisk(ctx, wt, opt)
			is.True(rep.Safe)
			tc.change(t, r, wt)
			before := wtStateOf(t, r, wt, "grove/g")

			err := r.RetireWorktree(ctx, wt, "grove/g", trash, rep)
			if tc.want == "" {
				is.NoErr(err)
				is.True(gone(wt))
				is.Equal(len(trashEntries(t, trash)), 1) // kept for a while
				return
			}
			is.True(errors.Is(err, grove.ErrAtRisk))
			is.True(strings.Contains(err.Error(), "changed after the at-risk gate judged it"))
			is.True(strings.Contains(err.Error(), tc.want)) // names what changed
			is.True(grove.HintOf(err) != "")
			is.Equal(wtStateOf(t, r, wt, "grove/g"), before) // exactly as it was
			is.Equal(trashEntries(t, trash), nil)
		})
	}
}

// A process that starts working in the worktree after the gate is seen in
// the moved worktree (its cwd follows the rename).
func TestRetireWorktreeRechecksProcesses(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	trash := filepath.Join(t.TempDir(), "trash")
	rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g"})
	is.True(rep.Safe)

	cmd := exec.Command("sleep", "600")
	cmd.Dir = wt
	is.NoErr(cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	before := wtStateOf(t, r, wt, "grove/g")
	err := r.RetireWorktree(ctx, wt, "grove/g", trash, rep)
	is.True(errors.Is(err, grove.ErrAtRisk))
	is.True(strings.Contains(err.Error(), "process (pids"))
	is.Equal(wtStateOf(t, r, wt, "grove/g"), before)
	cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "cwd"))
	is.NoErr(err)
	is.Equal(cwd, wt) // the process is back where it was

	// A gate that skipped processes: the re-check skips them too.
	rep = r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g", SkipProcesses: true})
	is.True(rep.Safe)
	is.NoErr(r.RetireWorktree(ctx, wt, "grove/g", trash, rep))
	is.True(gone(wt))
}

// A failure before git's record is touched (here: the lock is held by
// another process until ctx ends) moves the worktree back.
func TestRetireWorktreeMovesBackOnFailure(t *testing.T) {
	is := is.New(t)
	r, wt := gateSetup(t)
	trash := filepath.Join(t.TempDir(), "trash")
	write(t, filepath.Join(wt, "node_modules", "dep", "index.js"), "kept ignored file")
	rep := r.AtRisk(ctxT(t), wt, GateOptions{Branch: "grove/g"})
	is.True(rep.Safe)
	before := wtStateOf(t, r, wt, "grove/g")

	release := startLockHolder(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := r.RetireWorktree(ctx, wt, "grove/g", trash, rep)
	release()
	// Waiting for the lock (or, on a slow machine, still re-checking).
	is.True(err != nil)
	t.Log(err)
	is.Equal(wtStateOf(t, r, wt, "grove/g"), before)
	is.Equal(trashEntries(t, trash), nil)
}

// When the branch cannot be deleted after git's record of the worktree is
// gone (a stale ref lock), the entry stays in the trash: moving it back
// would leave a directory git no longer knows. The branch stays, and the
// retry deletes it.
func TestRetireWorktreeBranchLockedAfterUnregister(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	trash := filepath.Join(t.TempDir(), "trash")
	gd, err := GitDirOf(wt)
	is.NoErr(err)
	rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g"})
	is.True(rep.Safe)
	lock := filepath.Join(r.CommonDir, "refs", "heads", "grove", "g.lock")
	write(t, lock, "")

	err = r.RetireWorktree(ctx, wt, "grove/g", trash, rep)
	is.True(err != nil)
	is.True(!errors.Is(err, grove.ErrAtRisk))
	is.True(strings.Contains(err.Error(), "worktree moved to the trash"))
	is.True(strings.Contains(err.Error(), "branch kept"))
	is.True(strings.Contains(err.Error(), "refs/heads/grove/g"))
	is.True(gone(wt))    // not moved back as an orphan
	is.True(!exists(gd)) // unregistered
	wts, err := r.Worktrees(ctx)
	is.NoErr(err)
	is.Equal(len(wts), 1)
	is.Equal(len(trashEntries(t, trash)), 1)
	is.Equal(git(t, r.Root, "rev-parse", "grove/g"), rep.BranchTip)

	// The retry (the gate now says "missing") deletes the branch.
	is.NoErr(os.Remove(lock))
	rep = r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g"})
	is.Equal(reasons(rep), []string{RiskMissing})
	is.NoErr(r.RetireWorktree(ctx, wt, "grove/g", trash, rep))
	ok, err := r.IsLocalBranch(ctx, "grove/g")
	is.NoErr(err)
	is.True(!ok)
}

// The locked part of RetireWorktree checks HEAD and the branch tip once
// more, under the lock, before it changes anything.
func TestRemoveLockedExpect(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	head := git(t, wt, "rev-parse", "HEAD")
	gd, err := GitDirOf(wt)
	is.NoErr(err)
	is.NoErr(os.Rename(wt, filepath.Join(t.TempDir(), "moved")))
	for _, want := range []removeExpect{{head: head, tip: "0000000000000000000000000000000000000001"}, {head: "1234", tip: head}} {
		_, err = r.removeLocked(ctx, wt, "grove/g", 0, &want)
		is.True(errors.Is(err, grove.ErrAtRisk))
		is.True(strings.Contains(err.Error(), "after the at-risk gate judged it"))
		is.True(exists(filepath.Join(gd, "HEAD")))
		is.Equal(git(t, r.Root, "rev-parse", "grove/g"), head)
	}
	_, err = r.removeLocked(ctx, filepath.Join(t.TempDir(), "unknown"), "", 0, &removeExpect{head: head})
	is.True(strings.Contains(err.Error(), "no longer records it"))
	is.True(exists(filepath.Join(gd, "HEAD")))
	_, err = r.removeLocked(ctx, wt, "grove/g", 0, &removeExpect{head: head, tip: head})
	is.NoErr(err)
	is.True(!exists(gd))
	ok, err := r.IsLocalBranch(ctx, "grove/g")
	is.NoErr(err)
	is.True(!ok)
}

// Worktrees reached through a symlinked parent ($GROVE_HOME through a
// symlink): git records the real path, which must still be found once the
// directory is moved or gone.
func TestRetireWorktreeSymlinkedParent(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	real := t.TempDir()
	home := filepath.Join(t.TempDir(), "home")
	is.NoErr(os.Symlink(real, home))
	trash := filepath.Join(home, "trash")

	wt := filepath.Join(home, "worktrees", "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/s", "main"))
	rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/s"})
	is.True(rep.Safe)
	is.NoErr(r.RetireWorktree(ctx, wt, "grove/s", trash, rep))
	is.True(gone(filepath.Join(real, "worktrees", "wt")))
	wts, err := r.Worktrees(ctx)
	is.NoErr(err)
	is.Equal(len(wts), 1)
	ok, err := r.IsLocalBranch(ctx, "grove/s")
	is.NoErr(err)
	is.True(!ok)
	is.Equal(len(trashEntries(t, trash)), 1) // kept for a while

	// A refusal through the symlinked path moves it back.
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/s", "main"))
	rep = r.AtRisk(ctx, wt, GateOptions{Branch: "grove/s"})
	is.True(rep.Safe)
	write(t, filepath.Join(wt, "late.txt"), "late work")
	err = r.RetireWorktree(ctx, wt, "grove/s", trash, rep)
	is.True(errors.Is(err, grove.ErrAtRisk))
	is.Equal(read(t, filepath.Join(real, "worktrees", "wt", "late.txt")), "late work")
	is.Equal(git(t, wt, "status", "--porcelain"), "?? late.txt")

	// A crash after the move: the missing worktree is found through the
	// symlinked path and removed.
	is.NoErr(os.Remove(filepath.Join(wt, "late.txt")))
	is.NoErr(os.Rename(filepath.Join(real, "worktrees", "wt"), filepath.Join(real, "crashed")))
	rep = r.AtRisk(ctx, wt, GateOptions{Branch: "grove/s"})
	is.Equal(reasons(rep), []string{RiskMissing})
	is.NoErr(r.RetireWorktree(ctx, wt, "grove/s", trash, rep))
	wts, err = r.Worktrees(ctx)
	is.NoErr(err)
	is.Equal(len(wts), 1)
	ok, err = r.IsLocalBranch(ctx, "grove/s")
	is.NoErr(err)
	is.True(!ok)
}

// A worktree path that is itself a symlink to the worktree's directory:
// the directory is the worktree and is removed; the symlink is left
// dangling, as git worktree remove leaves it. A retry is a no-op.
func TestRetireWorktreeThroughSymlink(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	dir := filepath.Join(t.TempDir(), "dir")
	is.NoErr(os.Mkdir(dir, 0o755))
	link := filepath.Join(t.TempDir(), "link")
	is.NoErr(os.Symlink(dir, link))
	trash := filepath.Join(t.TempDir(), "trash")
	is.NoErr(r.CreateWorktree(ctx, link, "grove/l", "main"))
	wts, err := r.Worktrees(ctx)
	is.NoErr(err)
	is.Equal(wts[1].Path, dir) // git records the real directory

	rep := r.AtRisk(ctx, link, GateOptions{Branch: "grove/l"})
	is.True(rep.Safe)
	is.NoErr(r.RetireWorktree(ctx, link, "grove/l", trash, rep))
	is.True(gone(dir))
	fi, err := os.Lstat(link)
	is.NoErr(err)
	is.True(fi.Mode()&os.ModeSymlink != 0)
	wts, err = r.Worktrees(ctx)
	is.NoErr(err)
	is.Equal(len(wts), 1)
	ok, err := r.IsLocalBranch(ctx, "grove/l")
	is.NoErr(err)
	is.True(!ok)
	is.Equal(len(trashEntries(t, trash)), 1) // kept for a while

	rep = r.AtRisk(ctx, link, GateOptions{Branch: "grove/l"})
	is.Equal(reasons(rep), []string{RiskMissing}) // a dangling symlink is missing
	is.NoErr(r.RetireWorktree(ctx, link, "grove/l", trash, rep))

	// A crash after the move, then a retry through the dangling symlink.
	is.NoErr(os.Mkdir(dir, 0o755))
	is.NoErr(r.CreateWorktree(ctx, link, "grove/l", "main"))
	is.NoErr(os.Rename(dir, filepath.Join(t.TempDir(), "crashed")))
	rep = r.AtRisk(ctx, link, GateOptions{Branch: "grove/l"})
	is.Equal(reasons(rep), []string{RiskMissing})
	is.NoErr(r.RetireWorktree(ctx, link, "grove/l", trash, rep))
	wts, err = r.Worktrees(ctx)
	is.NoErr(err)
	is.Equal(len(wts), 1)
	ok, err = r.IsLocalBranch(ctx, "grove/l")
	is.NoErr(err)
	is.True(!ok)
}

// grove never prunes other worktrees: a user's worktree whose directory is
// away (a disk not mounted) keeps its administrative dir, HEAD included,
// whatever grove removes or re-creates.
func TestRemoveKeepsOtherMissingWorktrees(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	trash := filepath.Join(t.TempDir(), "trash")
	disk := t.TempDir()
	user := filepath.Join(disk, "user")
	git(t, r.Root, "worktree", "add", "-q", "-b", "user", user)
	git(t, user, "checkout", "-q", "--detach")
	git(t, user, "commit", "-q", "--allow-empty", "-m", "only in this worktree's HEAD")
	detached := git(t, user, "rev-parse", "HEAD")
	userGD, err := GitDirOf(user)
	is.NoErr(err)
	away := filepath.Join(t.TempDir(), "unmounted")
	is.NoErr(os.Rename(disk, away))
	userKept := func() {
		t.Helper()
		is.Equal(strings.TrimSpace(read(t, filepath.Join(userGD, "HEAD"))), detached)
		is.True(exists(filepath.Join(userGD, "index")))
	}

	tmp := t.TempDir()
	g := filepath.Join(tmp, "g")
	// RemoveWorktree of a grove worktree whose directory is gone.
	is.NoErr(r.CreateWorktree(ctx, g, "grove/g", "main"))
	is.NoErr(os.RemoveAll(g))
	is.NoErr(r.RemoveWorktree(ctx, g, "grove/g"))
	userKept()
	// CreateWorktree over a registered entry whose directory is gone.
	is.NoErr(r.CreateWorktree(ctx, g, "grove/g", "main"))
	is.NoErr(os.RemoveAll(g))
	is.NoErr(r.CreateWorktree(ctx, g, "grove/g", "main"))
	userKept()
	// ... and over one whose directory lost only its .git file: its
	// record goes, what is in the directory stays.
	is.NoErr(os.Remove(filepath.Join(g, ".git")))
	write(t, filepath.Join(g, "mine.txt"), "user file")
	err = r.CreateWorktree(ctx, g, "grove/g", "main")
	is.True(err != nil) // git will not add over a non-empty directory
	is.Equal(read(t, filepath.Join(g, "mine.txt")), "user file")
	wts, err := r.Worktrees(ctx)
	is.NoErr(err)
	for _, w := range wts {
		is.True(!samePath(w.Path, g))
	}
	userKept()
	is.NoErr(os.RemoveAll(g))
	// RetireWorktree.
	is.NoErr(r.CreateWorktree(ctx, g, "grove/g", "main"))
	rep := r.AtRisk(ctx, g, GateOptions{Branch: "grove/g"})
	is.True(rep.Safe)
	is.NoErr(r.RetireWorktree(ctx, g, "grove/g", trash, rep))
	userKept()

	// A missing grove worktree that is locked is not forgotten either.
	is.NoErr(r.CreateWorktree(ctx, g, "grove/g", "main"))
	git(t, r.Root, "worktree", "lock", "--reason", "on a usb disk", g)
	is.NoErr(os.RemoveAll(g))
	err = r.RemoveWorktree(ctx, g, "grove/g")
	is.True(errors.Is(err, grove.ErrAtRisk))
	is.True(strings.Contains(err.Error(), "is locked"))
	wts, err = r.Worktrees(ctx)
	is.NoErr(err)
	is.Equal(len(wts), 3) // main, user, g
	ok, err := r.IsLocalBranch(ctx, "grove/g")
	is.NoErr(err)
	is.True(ok)

	// The user's worktree comes back whole.
	is.NoErr(os.Rename(away, disk))
	is.Equal(git(t, user, "rev-parse", "HEAD"), detached)
	is.Equal(git(t, user, "status", "--porcelain"), "")
}

// forgetWorktree falls back to deleting exactly the worktree's
// administrative dir when git cannot (here: git does not match this
// spelling of the path), and refuses a locked one there too.
func TestForgetWorktreeFallback(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	a := filepath.Join(t.TempDir(), "a")
	b := filepath.Join(t.TempDir(), "b")
	is.NoErr(r.CreateWorktree(ctx, a, "grove/a", "main"))
	is.NoErr(r.CreateWorktree(ctx, b, "grove/b", "main"))
	gdA, err := GitDirOf(a)
	is.NoErr(err)
	gdB, err := GitDirOf(b)
	is.NoErr(err)
	is.NoErr(os.RemoveAll(a))
	is.NoErr(os.RemoveAll(b))
	git(t, r.Root, "worktree", "lock", b)
	oddA, oddB := a+"/nomatch/..", b+"/nomatch/.."
	_, err = run(ctx, r.Root, "worktree", "remove", "--", oddA)
	is.True(strings.Contains(stderrOf(err), "is not a working tree")) // the premise

	unlock, err := r.Lock(ctx)
	is.NoErr(err)
	defer unlock()
	err = r.forgetWorktree(ctx, &WorktreeEntry{Path: oddB})
	is.True(errors.Is(err, grove.ErrAtRisk)) // locked
	is.True(exists(filepath.Join(gdB, "HEAD")))
	is.NoErr(r.forgetWorktree(ctx, &WorktreeEntry{Path: oddA}))
	is.True(!exists(gdA))
	is.True(exists(filepath.Join(gdB, "HEAD"))) // b, missing too, keeps its record
}

// SweepTrash deletes nothing before retention: entries without a
// manifest (left by an older grove), entries a retire is working on and
// entries marked KEPT all stay; it never follows a symlink out of the
// trash. A purge by hand deletes a read-only tree (a Go module cache).
func TestSweepTrash(t *testing.T) {
	is := is.New(t)
	trash := filepath.Join(t.TempDir(), "trash")

	// Left by an older grove: a worktree holding a read-only module cache.
	old := filepath.Join(trash, "wt-1")
	mod := filepath.Join(old, trashWorktree, "gomodcache", "example.com", "m@v1.0.0")
	write(t, filepath.Join(mod, "sub", "m.go"), "package m\n")
	is.NoErr(os.Chmod(filepath.Join(mod, "sub", "m.go"), 0o444))
	for _, p := range []string{filepath.Join(mod, "sub"), mod, filepath.Dir(mod)} {
		is.NoErr(os.Chmod(p, 0o555))
	}
	is.NoErr(os.Chmod(filepath.Join(old, trashWorktree, "gomodcache"), 0o500))
	// In use by a retire.
	busy := filepath.Join(trash, "wt-2")
	write(t, filepath.Join(busy, trashWorktree, "work.txt"), "being re-checked")
	f, ok, err := tryFlock(filepath.Join(busy, trashLock))
	is.NoErr(err)
	is.True(ok)
	// Could not be moved back.
	kept := filepath.Join(trash, "wt-3")
	write(t, filepath.Join(kept, trashWorktree, "work.txt"), "refused, not moved back")
	write(t, filepath.Join(kept, trashKept), "could not be moved back\n")
	// A symlink out of the trash, and a stray file.
	outside := filepath.Join(t.TempDir(), "outside")
	write(t, filepath.Join(outside, "precious.txt"), "not in the trash")
	is.NoErr(os.Symlink(outside, filepath.Join(trash, "link")))
	write(t, filepath.Join(trash, "stray"), "x")

	err = SweepTrash(trash)
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), kept))
	is.True(strings.Contains(err.Error(), old)) // no manifest: kept
	is.Equal(trashEntries(t, trash), []string{"link", "stray", "wt-1", "wt-2", "wt-3"})
	is.Equal(read(t, filepath.Join(busy, trashWorktree, "work.txt")), "being re-checked")
	is.Equal(read(t, filepath.Join(kept, trashWorktree, "work.txt")), "refused, not moved back")
	is.Equal(read(t, filepath.Join(outside, "precious.txt")), "not in the trash")

	// Nor does the retention purge delete any of them, however old.
	rep, err := PurgeTrash(ctxT(t), trash, time.Now().Add(100*24*time.Hour), time.Hour, 1)
	is.NoErr(err)
	is.Equal(len(rep.Purged), 0)
	is.Equal(len(rep.Kept), 3)
	f.Close()

	// By hand, as the user, the read-only one goes.
	is.NoErr(runUnprivileged(t, "purge", old))
	is.Equal(trashEntries(t, trash), []string{"link", "stray", "wt-2", "wt-3"})
	is.Equal(read(t, filepath.Join(outside, "precious.txt")), "not in the trash")
	is.NoErr(SweepTrash(filepath.Join(t.TempDir(), "none")))
}

// RetireWorktree deletes a worktree holding read-only directories (kept
// ignored files such as a Go module cache or node_modules).
func TestRetireWorktreeReadOnlyFiles(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	trash := filepath.Join(t.TempDir(), "trash")
	pkg := filepath.Join(wt, "node_modules", "pkg")
	write(t, filepath.Join(pkg, "index.js"), "x")
	is.NoErr(os.Chmod(filepath.Join(pkg, "index.js"), 0o444))
	is.NoErr(os.Chmod(pkg, 0o555))
	is.True(r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g"}).Safe)

	is.NoErr(runUnprivileged(t, "retire", r.Root, wt, "grove/g", trash))
	is.True(gone(wt))
	is.Equal(len(trashEntries(t, trash)), 1) // kept for a while
	wts, err := r.Worktrees(ctx)
	is.NoErr(err)
	is.Equal(len(wts), 1)
	ok, err := r.IsLocalBranch(ctx, "grove/g")
	is.NoErr(err)
	is.True(!ok)
}

// samePath matches a path through symlinks even when it does not exist.
func TestSamePathMissing(t *testing.T) {
	is := is.New(t)
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	is.NoErr(os.Symlink(real, link))
	is.True(samePath(filepath.Join(link, "gone", "deeper"), filepath.Join(real, "gone", "deeper")))
	is.True(!samePath(filepath.Join(link, "gone"), filepath.Join(real, "other")))
	dangling := filepath.Join(t.TempDir(), "dangling")
	is.NoErr(os.Symlink(filepath.Join(real, "gone"), dangling))
	is.True(samePath(dangling, filepath.Join(link, "gone")))
	loop := filepath.Join(t.TempDir(), "loop")
	is.NoErr(os.Symlink(loop, loop))
	is.True(!samePath(loop, real))
}
