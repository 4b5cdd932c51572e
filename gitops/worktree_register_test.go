package gitops

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// The files addWorktreeFiles writes are those `git worktree add
// --no-checkout` writes (but the HEAD reflog git's symbolic-ref starts),
// name clashes get git's numbered names, git then works in the worktree,
// lists, removes and prunes it as its own; a configuration that makes git
// do more is left to git.
func TestAddWorktreeFilesAsGitDoes(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	r := newRepo(t)
	head := git(t, r.Root, "rev-parse", "HEAD")
	dir := t.TempDir()
	git(t, r.Root, "branch", "by-git", head)
	git(t, r.Root, "branch", "by-us", head)
	byGit := filepath.Join(dir, "a", "wt")
	git(t, r.Root, "worktree", "add", "-q", "--no-checkout", "--", byGit, "by-git")
	byUs := filepath.Join(dir, "b", "wt") // the same name: git numbers it
	ok, err := r.addWorktreeFiles(ctx, byUs, "by-us", head)
	is.NoErr(err)
	is.True(ok)

	read := func(p string) string {
		b, err := os.ReadFile(p)
		is.NoErr(err)
		return string(b)
	}
	gitAdmin, usAdmin := filepath.Join(r.CommonDir, "worktrees", "wt"), filepath.Join(r.CommonDir, "worktrees", "wt1")
	is.Equal(read(filepath.Join(byUs, ".git")), strings.Replace(read(filepath.Join(byGit, ".git")), gitAdmin, usAdmin, 1))
	is.Equal(read(filepath.Join(usAdmin, "gitdir")), strings.Replace(read(filepath.Join(gitAdmin, "gitdir")), byGit, byUs, 1))
	is.Equal(read(filepath.Join(usAdmin, "commondir")), read(filepath.Join(gitAdmin, "commondir")))
	is.Equal(read(filepath.Join(usAdmin, "HEAD")), strings.Replace(read(filepath.Join(gitAdmin, "HEAD")), "by-git", "by-us", 1))
	is.Equal(read(filepath.Join(usAdmin, "logs", "HEAD")), read(filepath.Join(gitAdmin, "logs", "HEAD"))) // (the tests fix the date)
	_, err = os.Stat(filepath.Join(usAdmin, "locked"))
	is.True(os.IsNotExist(err)) // unlocked once made
	for _, p := range []string{filepath.Join(byUs, ".git"), filepath.Join(usAdmin, "HEAD")} {
		fi, err := os.Stat(p)
		is.NoErr(err)
		gi, err := os.Stat(strings.Replace(strings.Replace(p, byUs, byGit, 1), usAdmin, gitAdmin, 1))
		is.NoErr(err)
		is.Equal(fi.Mode(), gi.Mode())
	}

	// git takes it as its own.
	list := git(t, r.Root, "worktree", "list", "--porcelain")
	is.True(strings.Contains(list, "worktree "+byUs+"\nHEAD "+head+"\nbranch refs/heads/by-us"))
	is.NoErr(populate(ctx, byUs))
	is.Equal(git(t, byUs, "status", "--porcelain"), "")
	is.Equal(git(t, byUs, "rev-parse", "--show-toplevel"), byUs)
	write(t, filepath.Join(byUs, "new.txt"), "new\n")
	git(t, byUs, "add", "new.txt")
	git(t, byUs, "commit", "-q", "-m", "in the worktree")
	is.True(git(t, r.Root, "rev-parse", "by-us") != head)
	git(t, r.Root, "worktree", "prune")
	is.True(strings.Contains(git(t, r.Root, "worktree", "list"), byUs)) // not pruned
	git(t, r.Root, "worktree", "remove", byUs)
	_, err = os.Stat(usAdmin)
	is.True(os.IsNotExist(err))

	// A non-empty path, a name git would change, sparse checkout: git's.
	busy := filepath.Join(dir, "busy")
	write(t, filepath.Join(busy, "f"), "x")
	ok, _ = r.addWorktreeFiles(ctx, busy, "by-us", head)
	is.True(!ok)
	ok, _ = r.addWorktreeFiles(ctx, filepath.Join(dir, "we ird"), "by-us", head)
	is.True(!ok)
	git(t, r.Root, "config", "core.logAllRefUpdates", "false") // no HEAD reflog: git's to say
	ok, _ = r.addWorktreeFiles(ctx, filepath.Join(dir, "nolog"), "by-us", head)
	is.True(!ok)
	git(t, r.Root, "config", "core.logAllRefUpdates", "true")
	git(t, r.Root, "config", "core.sparseCheckout", "true")
	ok, _ = r.addWorktreeFiles(ctx, filepath.Join(dir, "sparse"), "by-us", head)
	is.True(!ok)
	_, err = os.Stat(filepath.Join(dir, "sparse"))
	is.True(os.IsNotExist(err)) // nothing written
}

// A registration that fails midway leaves nothing: no admin dir (a locked
// one would keep the branch "checked out"), no .git file, no directory it
// made; the next try registers the worktree.
func TestAddWorktreeFilesLeavesNothingOnError(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	r := newRepo(t)
	head := git(t, r.Root, "rev-parse", "HEAD")
	git(t, r.Root, "branch", "midway", head)
	path := filepath.Join(t.TempDir(), "wt")
	registerFault = func(p string) error {
		if filepath.Base(p) == "HEAD" {
			return errors.New("injected")
		}
		return nil
	}
	ok, err := r.addWorktreeFiles(ctx, path, "midway", head)
	registerFault = nil
	is.True(ok)
	is.True(err != nil)
	_, statErr := os.Stat(path)
	is.True(os.IsNotExist(statErr))
	ents, _ := os.ReadDir(filepath.Join(r.CommonDir, "worktrees"))
	is.Equal(len(ents), 0)
	is.True(!strings.Contains(git(t, r.Root, "worktree", "list"), path))
	git(t, r.Root, "branch", "-D", "midway") // not "checked out" anywhere
	git(t, r.Root, "branch", "midway", head)
	ok, err = r.addWorktreeFiles(ctx, path, "midway", head)
	is.NoErr(err)
	is.True(ok)
	is.True(strings.Contains(git(t, r.Root, "worktree", "list"), path))
}
