package gitops

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/matryer/is"
)

// messUp leaves every kind of state in the worktree at wt.
func messUp(t *testing.T, wt string) {
	t.Helper()
	write(t, filepath.Join(wt, ".gitignore"), "*.secret\nnode_modules/\nprivate/\n")
	write(t, filepath.Join(wt, "tracked.sh"), "#!/bin/sh\n")
	write(t, filepath.Join(wt, "gone-staged"), "x\n")
	write(t, filepath.Join(wt, "gone-unstaged"), "x\n")
	write(t, filepath.Join(wt, "hidden"), "orig\n")
	git(t, wt, "add", "-A")
	git(t, wt, "commit", "-q", "-m", "setup")

	write(t, filepath.Join(wt, "README"), "unstaged edit\n")                   // " M"
	write(t, filepath.Join(wt, "src", "a.txt"), "staged\n")                    //
	git(t, wt, "add", "src/a.txt")                                             //
	write(t, filepath.Join(wt, "src", "a.txt"), "staged, then edited again\n") // "MM"
	write(t, filepath.Join(wt, "added"), "new, staged\n")                      // "A "
	git(t, wt, "add", "added")
	git(t, wt, "rm", "-q", "gone-staged")                                 // "D "
	if err := os.Remove(filepath.Join(wt, "gone-unstaged")); err != nil { // " D"
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(wt, "tracked.sh"), 0o755); err != nil { // mode change
		t.Fatal(err)
	}
	write(t, filepath.Join(wt, "untracked dir", "ü n.txt"), "untracked\n") // "??"
	if err := os.WriteFile(filepath.Join(wt, "tool"), []byte("\x00bin\xff"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("README", filepath.Join(wt, "link")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(wt, "key.secret"), "ignored\n")                       // "!!", at risk
	write(t, filepath.Join(wt, "node_modules", "dep", "i.js"), "reproducible\n") // "!!", kept by the gate
	write(t, filepath.Join(wt, "private", "[x] *.txt"), "ignored dir\n")         // "!!", at risk, a glob-like name
	git(t, wt, "update-index", "--assume-unchanged", "hidden")
	write(t, filepath.Join(wt, "hidden"), "hidden edit\n")
}

func TestSnapshotRestore(t *testing.T) {
	for _, withIgnored := range []bool{true, false} {
		t.Run(map[bool]string{true: "with ignored", false: "without ignored"}[withIgnored], func(t *testing.T) {
			is := is.New(t)
			ctx := ctxT(t)
			r := newRepo(t)
			wt := filepath.Join(t.TempDir(), "wt")
			is.NoErr(r.CreateWorktree(ctx, wt, "grove/snap", "main"))
			messUp(t, wt)

			gd, err := GitDirOf(wt)
			is.NoErr(err)
			indexBefore, err := os.ReadFile(filepath.Join(gd, "index"))
			is.NoErr(err)
			filesBefore := treeFiles(t, wt)

			snap, err := r.Snapshot(ctx, wt, "refs/grove/snapshots/s1", withIgnored)
			is.NoErr(err)

			// Nothing touched: not the index file, not the files.
			indexAfter, err := os.ReadFile(filepath.Join(gd, "index"))
			is.NoErr(err)
			is.True(bytes.Equal(indexBefore, indexAfter))
			is.Equal(treeFiles(t, wt), filesBefore)
			got, _ := r.RefCommit(ctx, "refs/grove/snapshots/s1")
			is.Equal(got, snap)
			is.Equal(git(t, r.Root, "rev-parse", snap+"^"), git(t, wt, "rev-parse", "HEAD"))

			restored := filepath.Join(t.TempDir(), "restored")
			is.NoErr(r.Restore(ctx, "refs/grove/snapshots/s1", restored, "grove/restored"))

			want := treeFiles(t, wt)
			if !withIgnored {
				delete(want, "node_modules/dep/i.js") // reproducible: left out; key.secret is kept
			}
			is.Equal(treeFiles(t, restored), want) // bytes, exec bits, symlinks
			is.Equal(git(t, restored, "rev-parse", "HEAD"), git(t, wt, "rev-parse", "HEAD"))
			is.Equal(git(t, restored, "symbolic-ref", "--short", "HEAD"), "grove/restored")
			status := func(dir string) string {
				return git(t, dir, "status", "--porcelain=v1", "-uall")
			}
			is.Equal(status(wt), " M README\nA  added\nD  gone-staged\n D gone-unstaged\nMM src/a.txt\n M tracked.sh\n"+
				"?? link\n?? tool\n?? \"untracked dir/\\303\\274 n.txt\"")
			is.Equal(status(restored), status(wt))
			is.Equal(git(t, restored, "diff", "--cached"), git(t, wt, "diff", "--cached"))
			is.Equal(git(t, restored, "ls-files", "-v", "-s"), git(t, wt, "ls-files", "-v", "-s"))
			if withIgnored {
				is.Equal(git(t, restored, "status", "--porcelain=v1", "-uall", "--ignored"),
					git(t, wt, "status", "--porcelain=v1", "-uall", "--ignored"))
			}

			// Restoring again over the same worktree is fine.
			is.NoErr(r.Restore(ctx, snap, restored, "grove/restored"))
			is.Equal(status(restored), status(wt))
		})
	}
}

func TestSnapshotConflictedIndex(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/c", "main"))
	write(t, filepath.Join(wt, "README"), "ours\n")
	git(t, wt, "commit", "-q", "-am", "ours")
	git(t, wt, "checkout", "-q", "-b", "tmp", "HEAD~1")
	write(t, filepath.Join(wt, "README"), "theirs\n")
	git(t, wt, "commit", "-q", "-am", "theirs")
	git(t, wt, "checkout", "-q", "grove/c")
	_, err := run(ctx, wt, "merge", "tmp")
	is.True(err != nil) // conflict

	snap, err := r.Snapshot(ctx, wt, "refs/grove/snapshots/c", false)
	is.NoErr(err)
	restored := filepath.Join(t.TempDir(), "restored")
	is.NoErr(r.Restore(ctx, snap, restored, "grove/c2"))
	is.Equal(treeFiles(t, restored), treeFiles(t, wt))
	is.Equal(git(t, restored, "ls-files", "-s"), git(t, wt, "ls-files", "-s")) // all three stages
	is.Equal(git(t, restored, "status", "--porcelain=v1", "-uall"), git(t, wt, "status", "--porcelain=v1", "-uall"))

	_, err = r.Snapshot(ctx, wt, "HEAD", false)
	is.True(err != nil)                                                                // only refs under refs/
	is.True(r.Restore(ctx, "main", filepath.Join(t.TempDir(), "x"), "grove/x") != nil) // not a snapshot
}
