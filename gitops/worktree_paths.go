package gitops

// Paths: worktrees are recorded by git under their real path, so grove
// compares paths through symlinks, also for directories that are gone.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// absPath makes p absolute and clean.
func absPath(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty path")
	}
	return filepath.Abs(p)
}

// samePath reports whether a and b name the same directory, directly or
// through symlinks, also when it does not exist (any more): git records a
// worktree by its real path, which a path through a symlinked parent (a
// $GROVE_HOME reached through a symlink) must still match once the
// directory is gone.
func samePath(a, b string) bool {
	a, b = filepath.Clean(a), filepath.Clean(b)
	return a == b || realPath(a) == realPath(b)
}

// realPath is filepath.EvalSymlinks for a path that may not exist: its
// longest existing prefix is resolved, a symlink whose target is missing
// is followed, and the missing rest is kept as it is.
func realPath(p string) string { return realPathN(filepath.Clean(p), 0) }

func realPathN(p string, depth int) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	parent := filepath.Dir(p)
	if parent == p || depth > 40 { // the root, or a symlink loop
		return p
	}
	q := filepath.Join(realPathN(parent, depth+1), filepath.Base(p))
	if target, err := os.Readlink(q); err == nil {
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(q), target)
		}
		return realPathN(filepath.Clean(target), depth+1)
	}
	return q
}

// gone reports whether nothing is at p, following symlinks (a symlink to
// a missing directory is gone too).
func gone(p string) bool {
	_, err := os.Stat(p)
	return errors.Is(err, os.ErrNotExist)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// recordedPath reads the path git records for the linked worktree whose
// administrative dir is gd (its gitdir file, read as git reads it).
func recordedPath(gd string) (string, error) {
	b, err := os.ReadFile(filepath.Join(gd, "gitdir"))
	if err != nil {
		return "", err
	}
	p := strings.TrimSuffix(strings.TrimRight(string(b), " \t\n\r\v\f"), "/.git")
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%s/gitdir: not an absolute path: %q", gd, p)
	}
	return p, nil
}

func shortSHA(s string) string {
	if s == "" {
		return "(none)"
	}
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
