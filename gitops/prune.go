package gitops

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
)

// Prune runs `git worktree prune` under the repository lock: the
// administrative files of worktrees whose directory is gone are deleted.
// Under the lock it cannot prune a worktree another grove process is
// adding. Branches are kept.
//
// It prunes every such worktree, a user's too (one on a disk that is not
// mounted loses its HEAD, index and detached commits): it is for an
// explicit administrative command only. Removals never prune; they drop
// the record of their own worktree alone.
func (r *Repo) Prune(ctx context.Context) error {
	unlock, err := r.Lock(ctx)
	if err != nil {
		return fmt.Errorf("prune worktrees of %s: %w", r.Root, err)
	}
	defer unlock()
	if _, err := runRetry(ctx, r.CommonDir, "worktree", "prune"); err != nil {
		return fmt.Errorf("prune worktrees of %s: %w", r.Root, err)
	}
	return nil
}

// MinVersion is the oldest git grove supports (merge-tree --write-tree).
var MinVersion = [3]int{2, 38, 0}

var versionRE = regexp.MustCompile(`^git version (\d+)\.(\d+)(?:\.(\d+))?`)

// Version runs `git version` and returns the version as major, minor,
// patch and the raw line.
func Version(ctx context.Context) (v [3]int, raw string, err error) {
	out, err := run(ctx, "", "version")
	if err != nil {
		return v, "", fmt.Errorf("git version: %w", err)
	}
	raw = trim(out)
	m := versionRE.FindStringSubmatch(raw)
	if m == nil {
		return v, raw, fmt.Errorf("git version: cannot parse %q", raw)
	}
	for i := range 3 {
		if m[i+1] != "" {
			v[i], _ = strconv.Atoi(m[i+1])
		}
	}
	return v, raw, nil
}

// VersionAtLeast reports whether v >= min.
func VersionAtLeast(v, min [3]int) bool {
	for i := range 3 {
		if v[i] != min[i] {
			return v[i] > min[i]
		}
	}
	return true
}
