package gitops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WorktreeState is what a worktree holds right now, as git would commit it.
type WorktreeState struct {
	Head string // HEAD's commit ("" if unborn)
	Tree string // the tree of every file `git add -A` would stage now
	// Commit is Head when Tree is Head's tree; otherwise a new commit of
	// Tree whose parent is Head (only when asked for one).
	Commit string
}

// Changed reports whether the worktree differs from its HEAD.
func (s WorktreeState) Changed() bool { return s.Commit != s.Head }

// StateOf reads the worktree at wtPath as `git add -A` would stage it
// (tracked files as they are on disk, untracked files, no ignored file)
// into a temporary index (GIT_INDEX_FILE, seeded from a copy of the real
// one) and writes its tree. The worktree and its index are not touched.
// With message != "", a worktree that differs from HEAD is also committed
// (hooks and signing off; the commit is on no ref: the caller keeps it).
//
// The rules are those of the diff stage's `git add -A` on purpose: a
// task's start point and its end state are then comparable file by file.
func (r *Repo) StateOf(ctx context.Context, wtPath, message string) (WorktreeState, error) {
	var st WorktreeState
	wt, err := absPath(wtPath)
	if err != nil {
		return st, fmt.Errorf("read state of %s: %w", wtPath, err)
	}
	gitDir, err := GitDirOf(wt)
	if err != nil {
		return st, fmt.Errorf("read state of %s: %w", wt, err)
	}
	headTree := ""
	if out, err := run(ctx, wt, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"); err == nil {
		st.Head = trim(out)
		out, err := run(ctx, wt, "rev-parse", "--verify", st.Head+"^{tree}")
		if err != nil {
			return st, fmt.Errorf("read state of %s: %w", wt, err)
		}
		headTree = trim(out)
	} else if exitCode(err) != 1 {
		return st, fmt.Errorf("read state of %s: %w", wt, err)
	}
	tmp, err := os.MkdirTemp("", "grove-state-")
	if err != nil {
		return st, err
	}
	defer os.RemoveAll(tmp)
	idx := filepath.Join(tmp, "index")
	if err := copyFile(filepath.Join(gitDir, "index"), idx); err != nil && !errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("read state of %s: %w", wt, err)
	}
	env := []string{"GIT_INDEX_FILE=" + idx}
	if _, err := runGit(ctx, wt, env, nil, "add", "-A"); err != nil {
		return st, fmt.Errorf("read state of %s: %w", wt, err)
	}
	out, err := runGit(ctx, wt, env, nil, "write-tree")
	if err != nil {
		return st, fmt.Errorf("read state of %s: %w", wt, err)
	}
	st.Tree = trim(out)
	st.Commit = st.Head
	if st.Tree == headTree || message == "" {
		if st.Tree != headTree {
			st.Commit = ""
		}
		return st, nil
	}
	id, err := identityArgs(ctx, wt)
	if err != nil {
		return st, fmt.Errorf("read state of %s: %w", wt, err)
	}
	args := append(id, "commit-tree", "--no-gpg-sign", "-m", message)
	if st.Head != "" {
		args = append(args, "-p", st.Head)
	}
	out, err = run(ctx, wt, append(args, st.Tree)...)
	if err != nil {
		return st, fmt.Errorf("commit state of %s: %w", wt, err)
	}
	st.Commit = trim(out)
	return st, nil
}

// MoveBranch points refs/heads/<branch> at to if it still points at from
// (compare-and-swap). The worktree and the index are not touched.
func (r *Repo) MoveBranch(ctx context.Context, branch, from, to string) error {
	ref := "refs/heads/" + branch
	if !validRefName(ref) {
		return fmt.Errorf("move branch %q: invalid name", branch)
	}
	if err := checkRev(from); err != nil {
		return fmt.Errorf("move branch %s: %w", branch, err)
	}
	if err := checkRev(to); err != nil {
		return fmt.Errorf("move branch %s: %w", branch, err)
	}
	if _, err := runRetry(ctx, r.Root, "update-ref", "-m", "grove: session changes before a task", "--end-of-options", ref, to, from); err != nil {
		return fmt.Errorf("move branch %s: %w", branch, err)
	}
	return nil
}

// ParentOf returns a commit's first parent ("" for a root commit).
func (r *Repo) ParentOf(ctx context.Context, commit string) (string, error) {
	if err := checkRev(commit); err != nil {
		return "", fmt.Errorf("parent of %s: %w", commit, err)
	}
	out, err := run(ctx, r.Root, "rev-list", "--parents", "-n", "1", "--end-of-options", commit)
	if err != nil {
		return "", fmt.Errorf("parent of %s: %w", commit, err)
	}
	f := strings.Fields(trim(out))
	if len(f) < 2 {
		return "", nil
	}
	return f[1], nil
}
