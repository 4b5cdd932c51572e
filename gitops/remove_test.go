package gitops

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// A worktree git refuses to remove is forced only when a snapshot records
// exactly what it holds now.
func TestRemoveWorktreeForcesOnlyWhatASnapshotHolds(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/f", "main"))
	write(t, filepath.Join(wt, "README"), "edited\n")
	write(t, filepath.Join(wt, "new.txt"), "untracked\n")

	err := r.RemoveWorktree(ctx, wt, "grove/f")
	is.True(errors.Is(err, grove.ErrAtRisk)) // no snapshot
	is.Equal(read(t, filepath.Join(wt, "new.txt")), "untracked\n")

	// A snapshot of another state does not count.
	ref := SnapshotsPrefix + "f"
	_, err = r.Snapshot(ctx, wt, ref, false)
	is.NoErr(err)
	write(t, filepath.Join(wt, "new.txt"), "changed after the snapshot\n")
	covered, err := r.SnapshotCovers(ctx, wt)
	is.NoErr(err)
	is.Equal(covered, "")
	is.True(errors.Is(r.RemoveWorktree(ctx, wt, "grove/f"), grove.ErrAtRisk))
	is.Equal(read(t, filepath.Join(wt, "new.txt")), "changed after the snapshot\n")

	// Snapshot again, and lock it too: removed, branch deleted.
	_, err = r.Snapshot(ctx, wt, ref, false)
	is.NoErr(err)
	git(t, r.Root, "worktree", "lock", "--reason", "busy", wt)
	covered, err = r.SnapshotCovers(ctx, wt)
	is.NoErr(err)
	is.Equal(covered, ref)
	is.NoErr(r.RemoveWorktree(ctx, wt, "grove/f"))
	_, err = os.Stat(wt)
	is.True(errors.Is(err, os.ErrNotExist))
	ok, _ := r.IsLocalBranch(ctx, "grove/f")
	is.True(!ok)

	// And it comes back.
	back := filepath.Join(t.TempDir(), "back")
	is.NoErr(r.Restore(ctx, ref, back, "grove/f"))
	is.Equal(read(t, filepath.Join(back, "new.txt")), "changed after the snapshot\n")
	is.Equal(git(t, back, "status", "--porcelain"), " M README\n?? new.txt")
}

// Snapshots keep refs/worktree/* and the commits they hold; restore puts
// them back.
func TestSnapshotKeepsWorktreeRefs(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/w", "main"))
	git(t, wt, "commit", "-q", "--allow-empty", "-m", "kept by a worktree ref")
	kept := git(t, wt, "rev-parse", "HEAD")
	git(t, wt, "update-ref", "refs/worktree/keep", kept)
	git(t, wt, "reset", "-q", "--hard", "HEAD~1")

	snap, err := r.Snapshot(ctx, wt, SnapshotsPrefix+"w", false)
	is.NoErr(err)
	is.Equal(git(t, r.Root, "rev-parse", snap+"^2"), kept) // reachable from the snapshot
	// Clean worktree, but the ref is at risk: plain remove would lose it;
	// git does not refuse, so it goes (the snapshot holds it).
	is.NoErr(r.RemoveWorktree(ctx, wt, "grove/w"))

	back := filepath.Join(t.TempDir(), "back")
	is.NoErr(r.Restore(ctx, SnapshotsPrefix+"w", back, "grove/w"))
	is.Equal(git(t, back, "rev-parse", "refs/worktree/keep"), kept)
	is.Equal(git(t, back, "rev-parse", "HEAD"), git(t, r.Root, "rev-parse", "main"))
}

// A missing worktree's record is forgotten into the trash, its branch
// kept when Retire is given none (what the reaper does).
func TestForgetMissingAndVersion(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/p", "main"))
	is.NoErr(os.RemoveAll(wt))
	wts, err := r.Worktrees(ctx)
	is.NoErr(err)
	is.Equal(len(wts), 2)
	is.True(wts[1].Prunable)
	e, err := r.Retire(ctx, wt, "", filepath.Join(t.TempDir(), "trash"), Report{}, RetireOptions{})
	is.NoErr(err)
	is.True(e.Manifest.Missing)
	wts, err = r.Worktrees(ctx)
	is.NoErr(err)
	is.Equal(len(wts), 1)
	ok, _ := r.IsLocalBranch(ctx, "grove/p")
	is.True(ok) // branches are kept

	v, raw, err := Version(ctx)
	is.NoErr(err)
	is.True(raw != "")
	is.True(VersionAtLeast(v, [3]int{2, 0, 0}))
	is.True(VersionAtLeast([3]int{2, 38, 0}, MinVersion))
	is.True(!VersionAtLeast([3]int{2, 37, 9}, MinVersion))
	is.True(VersionAtLeast([3]int{3, 0, 0}, MinVersion))
}

// git refuses any worktree with an initialised submodule: a clean one is
// removed (the caller ran the gate); one with submodule work never is.
func TestRemoveWorktreeWithSubmodule(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	lib := filepath.Join(t.TempDir(), "lib")
	git(t, "", "init", "-q", "-b", "main", lib)
	write(t, filepath.Join(lib, "lib.txt"), "lib\n")
	git(t, lib, "add", "-A")
	git(t, lib, "commit", "-q", "-m", "lib")
	r := newRepo(t)
	git(t, r.Root, "-c", "protocol.file.allow=always", "submodule", "add", "-q", lib, "lib")
	git(t, r.Root, "commit", "-q", "-m", "sub")

	for _, withWork := range []bool{false, true} {
		wt := filepath.Join(t.TempDir(), "wt")
		is.NoErr(r.CreateWorktree(ctx, wt, "grove/s", "main"))
		git(t, wt, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init")
		if !withWork {
			is.NoErr(r.RemoveWorktree(ctx, wt, "grove/s"))
			_, err := os.Stat(wt)
			is.True(errors.Is(err, os.ErrNotExist))
			continue
		}
		git(t, filepath.Join(wt, "lib"), "commit", "-q", "--allow-empty", "-m", "local")
		_, err := r.Snapshot(ctx, wt, SnapshotsPrefix+"s", false)
		is.NoErr(err)
		err = r.RemoveWorktree(ctx, wt, "grove/s")
		is.True(errors.Is(err, grove.ErrAtRisk))
		is.True(exists(filepath.Join(wt, "lib", "lib.txt")))
	}
}
