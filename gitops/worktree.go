package gitops

// Listing a repository's worktrees and finding their admin dirs.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WorktreeEntry is one entry of `git worktree list --porcelain -z`.
type WorktreeEntry struct {
	Path     string // absolute, as git records it
	Head     string // commit SHA; "" for a bare entry or an unborn branch
	Branch   string // short branch name ("main", not "refs/heads/main"); "" if detached or bare
	Bare     bool
	Detached bool
	Locked   bool
	Prunable bool // git considers it stale (typically: its directory is gone)
}

// Worktrees lists the repository's worktrees, the main worktree first:
// read from git's files when they answer exactly (worktreesFiles), else
// from `git worktree list`.
func (r *Repo) Worktrees(ctx context.Context) ([]WorktreeEntry, error) {
	if list, known := r.worktreesFiles(); known {
		return list, nil
	}
	return r.worktreesGit(ctx)
}

// worktreesGit is Worktrees asking git.
func (r *Repo) worktreesGit(ctx context.Context) ([]WorktreeEntry, error) {
	// From the main worktree: git knows its path there even when the git
	// dir lives elsewhere (--separate-git-dir).
	out, err := run(ctx, r.Root, "worktree", "list", "--porcelain", "-z")
	if err != nil {
		return nil, fmt.Errorf("list worktrees: %w", err)
	}
	var list []WorktreeEntry
	var cur *WorktreeEntry
	for _, f := range strings.Split(string(out), "\x00") {
		if f == "" {
			cur = nil
			continue
		}
		key, val, _ := strings.Cut(f, " ")
		if key == "worktree" {
			list = append(list, WorktreeEntry{Path: val})
			cur = &list[len(list)-1]
			continue
		}
		if cur == nil {
			continue
		}
		switch key {
		case "HEAD":
			cur.Head = val
		case "branch":
			cur.Branch = strings.TrimPrefix(val, "refs/heads/")
		case "bare":
			cur.Bare = true
		case "detached":
			cur.Detached = true
		case "locked":
			cur.Locked = true
		case "prunable":
			cur.Prunable = true
		}
	}
	return list, nil
}

func describeHead(w *WorktreeEntry) string {
	if w.Branch != "" {
		return "branch " + w.Branch
	}
	return "a detached HEAD"
}

// GitDirOf returns the git dir of the linked worktree at path by reading
// its .git file.
func GitDirOf(path string) (string, error) {
	b, err := os.ReadFile(filepath.Join(path, ".git"))
	if err != nil {
		return "", err
	}
	d, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir: ")
	if !ok {
		return "", fmt.Errorf("%s/.git: not a gitdir file", path)
	}
	if !filepath.IsAbs(d) {
		d = filepath.Join(path, d)
	}
	return filepath.Clean(d), nil
}

// adminDirOf returns the administrative dir ($GIT_COMMON_DIR/worktrees/<id>)
// of the linked worktree git records at path, or "" if there is none.
func (r *Repo) adminDirOf(path string) (string, error) {
	base := filepath.Join(r.CommonDir, "worktrees")
	ents, err := os.ReadDir(base)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var found []string
	for _, e := range ents {
		gd := filepath.Join(base, e.Name())
		if !e.IsDir() {
			continue
		}
		p, err := recordedPath(gd)
		if err == nil && samePath(p, path) {
			found = append(found, gd)
		}
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("%d administrative dirs record %s: %s", len(found), path, strings.Join(found, ", "))
}

// GC runs `git gc --quiet` on the repository under the repository lock, so
// it cannot race a worktree being added (gc reads every worktree's HEAD and
// prunes worktrees). Run outside the lock, gc fails or prunes on a
// half-made worktree. Another gc already running (gc.pid) counts as
// success.
func (r *Repo) GC(ctx context.Context) error {
	unlock, err := r.Lock(ctx)
	if err != nil {
		return fmt.Errorf("gc %s: %w", r.Root, err)
	}
	defer unlock()
	if _, err := runRetry(ctx, r.Root, "gc", "--quiet"); err != nil && !strings.Contains(stderrOf(err), "gc is already running") {
		return fmt.Errorf("gc %s: %w", r.Root, err)
	}
	return nil
}
