package gitops

import (
	"context"
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
// lock removed; HEAD's reflog starts with the line git's symbolic-ref
// writes (the committer identity is git's own answer, `git var
// GIT_COMMITTER_IDENT`, asked once per configuration).
//
// Anything git would do more is left to git (ok false, nothing written):
// a configuration that could matter (sparse checkout patterns to copy, a
// per-worktree config, an include, core.worktree, core.logAllRefUpdates,
// a shared repository), a reftable
// repository, a name git would sanitise, a path that exists and is not an
// empty directory.

// addWorktreeFiles registers path as a worktree of r on branch (which
// exists), as `git worktree add --no-checkout -- path branch` would. ok is
// false when git must do it; then nothing was written. On an error nothing
// is left either (ok true: it was tried here).
func (r *Repo) addWorktreeFiles(ctx context.Context, path, branch, tip string) (ok bool, err error) {
	name := filepath.Base(path)
	if !plainWorktreeName(name) || !filepath.IsAbs(path) || !r.plainForWorktreeAdd() {
		return false, nil
	}
	if _, valid := oneObjectID([]byte(tip)); !valid {
		return false, nil
	}
	ident, known := reflogIdent(ctx, r.Root) // rename_files.go: git's own answer, cached
	if !known {
		return false, nil
	}
	madePath := false
	switch ents, err := os.ReadDir(path); {
	case errors.Is(err, fs.ErrNotExist):
		madePath = true
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
	// On an error from here on, nothing is left: as git removes its
	// half-made worktree when add fails (a locked admin dir would keep the
	// branch "checked out" and refuse the undo's removal).
	defer func() {
		if err != nil {
			_ = os.RemoveAll(admin)
			_ = os.Remove(filepath.Join(path, ".git"))
			if madePath {
				_ = os.Remove(path) // only if empty
			}
		}
	}()
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
		if registerFault != nil {
			if err := registerFault(f.path); err != nil {
				return true, err
			}
		}
		if err := writeGitFile(f.path, f.text); err != nil {
			return true, err
		}
	}
	// The reflog git's symbolic-ref starts: "<zeros> <tip> <ident> <when>"
	// (no message).
	if err := os.MkdirAll(filepath.Join(admin, "logs"), 0o777); err != nil {
		return true, err
	}
	zeros := strings.Repeat("0", len(tip))
	if err := writeGitFile(filepath.Join(admin, "logs", "HEAD"), fmt.Sprintf("%s %s %s %s", zeros, tip, ident.ident, ident.stamp())); err != nil {
		return true, err
	}
	return true, os.Remove(locked)
}

// registerFault, set by tests only, fails addWorktreeFiles before it
// writes the file at the path it is given.
var registerFault func(path string) error

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
	for _, s := range []string{"sparse", "worktreeconfig", "bare = true", "bare=true", "sharedrepository"} {
		if strings.Contains(low, s) {
			return false
		}
	}
	// `git init` writes logallrefupdates = true; anything else is git's.
	for _, line := range strings.Split(low, "\n") {
		if k, v, ok := strings.Cut(strings.ReplaceAll(strings.ReplaceAll(line, " ", ""), "\t", ""), "="); ok && k == "logallrefupdates" && v != "true" {
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
