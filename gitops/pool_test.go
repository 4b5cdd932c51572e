package gitops

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"
)

// The warm pool's git steps: rename a worktree's branch (idempotently),
// move a clean worktree forward in place, tell clean from dirty.
func TestPoolSteps(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	from := git(t, r.Root, "rev-parse", "HEAD")
	wt := filepath.Join(t.TempDir(), "p-1")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/pool/1", from))

	clean, err := r.Clean(ctx, wt)
	is.NoErr(err)
	is.True(clean)
	write(t, filepath.Join(wt, "stray.txt"), "x\n")
	clean, err = r.Clean(ctx, wt)
	is.NoErr(err)
	is.True(!clean) // an untracked file is dirt
	is.NoErr(os.Remove(filepath.Join(wt, "stray.txt")))

	// The tip moves: the worktree follows with only the changed file.
	write(t, filepath.Join(r.Root, "README"), "moved on\n")
	git(t, r.Root, "commit", "-qam", "next")
	to := git(t, r.Root, "rev-parse", "HEAD")
	is.NoErr(r.Advance(ctx, wt, "grove/pool/1", to))
	is.Equal(read(t, filepath.Join(wt, "README")), "moved on\n")
	is.Equal(git(t, wt, "rev-parse", "HEAD"), to)
	clean, err = r.Clean(ctx, wt)
	is.NoErr(err)
	is.True(clean)
	// Already there: a no-op.
	is.NoErr(r.Advance(ctx, wt, "grove/pool/1", to))
	is.Equal(git(t, wt, "rev-parse", "HEAD"), to)

	// Rename: the worktree follows; a repeat is a no-op; a missing branch
	// is an error.
	is.NoErr(r.RenameBranch(ctx, "grove/pool/1", "grove/t1"))
	is.Equal(git(t, wt, "symbolic-ref", "HEAD"), "refs/heads/grove/t1")
	is.NoErr(r.RenameBranch(ctx, "grove/pool/1", "grove/t1"))
	is.True(r.RenameBranch(ctx, "grove/pool/2", "grove/t2") != nil)
	is.True(r.RenameBranch(ctx, "grove/t1", "bad..name") != nil)
	is.Equal(git(t, r.Root, "branch", "--list", "grove/pool/*"), "")
}

// Advance refuses to overwrite a local change to a file the move touches,
// and leaves the worktree as it was.
func TestAdvanceKeepsLocalChanges(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	from := git(t, r.Root, "rev-parse", "HEAD")
	wt := filepath.Join(t.TempDir(), "p-2")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/pool/2", from))
	write(t, filepath.Join(wt, "README"), "someone's edit\n")
	write(t, filepath.Join(r.Root, "README"), "moved on\n")
	git(t, r.Root, "commit", "-qam", "next")
	to := git(t, r.Root, "rev-parse", "HEAD")
	is.True(r.Advance(ctx, wt, "grove/pool/2", to) != nil)
	is.Equal(read(t, filepath.Join(wt, "README")), "someone's edit\n")
	is.Equal(git(t, wt, "rev-parse", "HEAD"), from)
}

// A crash between an Advance's checkout and its branch move leaves the
// files at the new commit and the branch behind: FinishAdvance completes
// it, and refuses a worktree that holds anything else.
func TestFinishAdvance(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	from := git(t, r.Root, "rev-parse", "HEAD")
	wt := filepath.Join(t.TempDir(), "p-3")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/pool/3", from))
	write(t, filepath.Join(r.Root, "README"), "moved on\n")
	write(t, filepath.Join(r.Root, "new.txt"), "new\n")
	git(t, r.Root, "add", "-A")
	git(t, r.Root, "commit", "-qm", "next")
	to := git(t, r.Root, "rev-parse", "HEAD")

	ok, err := r.FinishAdvance(ctx, wt, "grove/pool/3", to)
	is.NoErr(err)
	is.True(!ok)                                  // nothing was moved: not at `to`
	git(t, wt, "read-tree", "-m", "-u", from, to) // the move's checkout, then the "crash"
	clean, err := r.Clean(ctx, wt)
	is.NoErr(err)
	is.True(!clean) // against the old branch tip it looks dirty

	write(t, filepath.Join(wt, "stray.txt"), "x\n")
	ok, err = r.FinishAdvance(ctx, wt, "grove/pool/3", to)
	is.NoErr(err)
	is.True(!ok) // something else is there: left alone
	is.Equal(git(t, wt, "rev-parse", "HEAD"), from)
	is.NoErr(os.Remove(filepath.Join(wt, "stray.txt")))

	ok, err = r.FinishAdvance(ctx, wt, "grove/pool/3", to)
	is.NoErr(err)
	is.True(ok)
	is.Equal(git(t, wt, "rev-parse", "HEAD"), to)
	clean, err = r.Clean(ctx, wt)
	is.NoErr(err)
	is.True(clean)
}

// A git error names git's complaint, not the progress line before it.
func TestGitErrorNamesTheCause(t *testing.T) {
	is := is.New(t)
	err := &GitError{Args: []string{"worktree", "add"}, ExitCode: 128,
		Stderr: "Preparing worktree (new branch 'x')\nfatal: failed to read .git/worktrees/x/commondir: Success\n"}
	is.Equal(err.Error(), "git worktree add: fatal: failed to read .git/worktrees/x/commondir: Success (exit 128)")
	err.Stderr = "just one line\nand more\n"
	is.Equal(err.Error(), "git worktree add: just one line (exit 128)")
}

// The gate writes nothing by default; with RefreshIndex, and no process
// working in the worktree, its status may refresh the index's stat data
// (so the re-check of a removal is cheap).
func TestGateRefreshIndex(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/t9", "main"))
	gd, err := GitDirOf(wt)
	is.NoErr(err)
	mtime := func() time.Time {
		fi, err := os.Stat(filepath.Join(gd, "index"))
		is.NoErr(err)
		return fi.ModTime()
	}
	// Files checked out in the second the index was written are racily
	// clean; date them back instead of waiting that second out.
	old := time.Now().Add(-time.Minute)
	is.NoErr(filepath.WalkDir(wt, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() || de.Name() == ".git" {
			return err
		}
		return os.Chtimes(p, old, old)
	}))
	before := mtime()
	is.True(r.AtRisk(ctx, wt, GateOptions{Branch: "grove/t9"}).Safe)
	is.Equal(mtime(), before) // read-only

	busy := exec.Command("sleep", "30")
	busy.Dir = wt
	is.NoErr(busy.Start())
	is.True(!r.AtRisk(ctx, wt, GateOptions{Branch: "grove/t9", RefreshIndex: true}).Safe)
	is.Equal(mtime(), before) // someone works there: still read-only
	is.NoErr(busy.Process.Kill())
	_ = busy.Wait()

	is.True(r.AtRisk(ctx, wt, GateOptions{Branch: "grove/t9", RefreshIndex: true}).Safe)
	is.True(mtime().After(before)) // refreshed
}
