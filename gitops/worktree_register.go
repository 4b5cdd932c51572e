package gitops

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Registering a worktree without a git process, in the common case.
//
// `git worktree add --no-checkout <path> <branch>` writes a handful of
// files and runs `git symbolic-ref` in the new worktree: two processes,
// ~30 ms of CPU on a small box, for every task. addWorktreeFiles writes
// the same files in the same order (builtin/worktree.c, add_worktree):
// the admin dir $COMMON/worktrees/<name> made with mkdir (a number added
// to the name while it exists), locked ("initializing") so that a
// concurrent `git worktree prune` leaves it alone, then gitdir (the real
// path of <path>/.git), <path>/.git ("gitdir: " and the admin dir's real
// path), commondir ("../..") and HEAD ("ref: refs/heads/<branch>"), and the
// lock removed. The one difference: git's symbolic-ref also starts the
// worktree's HEAD reflog with a line in the committer's name; here the
// reflog starts with the worktree's first commit.
//
// Anything git would do more is left to git (ok false, nothing written):
// a configuration that could matter (sparse checkout patterns to copy, a
// per-worktree config, an include, core.worktree), a reftable
// repository, a name git would sanitise, a path that exists and is not an
// empty directory.

// addWorktreeFiles registers path as a worktree of r on branch (which
// exists), as `git worktree add --no-checkout -- path branch` would. ok is
// false when git must do it; then nothing was written. An error after
// something was written leaves what the caller's undo (git worktree
// remove) cleans.
func (r *Repo) addWorktreeFiles(path, branch string) (ok bool, err error) {
	name := filepath.Base(path)
	if !plainWorktreeName(name) || !filepath.IsAbs(path) || !r.plainForWorktreeAdd() {
		return false, nil
	}
	switch ents, err := os.ReadDir(path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil || len(ents) > 0:
		return false, nil // git refuses, or says why
	}
	admins := filepath.Join(r.CommonDir, "worktrees")
	if err := os.MkdirAll(admins, 0o777); err != nil {
		return false, err
	}
	admin := filepath.Join(admins, name)
	for n := 1; ; n++ {
		err := os.Mkdir(admin, 0o777)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || n > 1000 {
			return false, fmt.Errorf("create %s: %w", admin, err)
		}
		admin = filepath.Join(admins, name+strconv.Itoa(n))
	}
	locked := filepath.Join(admin, "locked")
	if err := writeGitFile(locked, "initializing"); err != nil {
		return true, err
	}
	if err := os.MkdirAll(path, 0o777); err != nil {
		return true, err
	}
	realPath, err := filepath.EvalSymlinks(path)
	if err != nil {
		return true, err
	}
	realAdmin, err := filepath.EvalSymlinks(admin)
	if err != nil {
		return true, err
	}
	for _, f := range []struct{ path, text string }{
		{filepath.Join(admin, "gitdir"), realPath + "/.git"},
		{filepath.Join(path, ".git"), "gitdir: " + realAdmin},
		{filepath.Join(admin, "commondir"), "../.."},
		{filepath.Join(admin, "HEAD"), "ref: refs/heads/" + branch},
	} {
		if err := writeGitFile(f.path, f.text); err != nil {
			return true, err
		}
	}
	return true, os.Remove(locked)
}

// plainWorktreeName reports whether git would use name as it is for a
// worktree's admin dir (no sanitising): letters, digits, '-', '_' and
// inner dots, not ending in ".lock".
func plainWorktreeName(name string) bool {
	if name == "" || name[0] == '.' || strings.HasSuffix(name, ".lock") || strings.HasSuffix(name, ".") || strings.Contains(name, "..") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// plainForWorktreeAdd reports whether nothing in r's configuration or
// layout makes `git worktree add` do more than addWorktreeFiles: the
// common dir is the main worktree's .git directory, its config has no
// include, core.worktree, sparse checkout or per-worktree config, there
// are no sparse checkout patterns to copy, and refs are files.
func (r *Repo) plainForWorktreeAdd() bool {
	if filepath.Base(r.CommonDir) != ".git" || !plainConfig(r.CommonDir) || usesReftable(r.CommonDir) {
		return false
	}
	b, err := os.ReadFile(filepath.Join(r.CommonDir, "config"))
	if err != nil {
		return false
	}
	low := strings.ToLower(string(b))
	for _, s := range []string{"sparse", "worktreeconfig", "bare = true", "bare=true"} {
		if strings.Contains(low, s) {
			return false
		}
	}
	_, err = os.Lstat(filepath.Join(r.CommonDir, "info", "sparse-checkout"))
	return errors.Is(err, fs.ErrNotExist)
}

// writeGitFile writes text and a newline to path, as git's write_file
// does (created or truncated, mode 0666 less the umask).
func writeGitFile(path, text string) error {
	return os.WriteFile(path, []byte(text+"\n"), 0o666)
}
