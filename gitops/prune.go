package gitops

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync"
)

// There is no Prune: grove never runs a repository-wide `git worktree
// prune`, which drops the record (HEAD, index, detached commits) of every
// worktree whose directory is missing at that moment: a user's on a disk
// not mounted, or one a close has just moved into the trash. A grove
// worktree whose directory is gone is removed by Retire, which forgets
// its record alone, into the trash, after checking where it went.

// MinVersion is the oldest git grove supports (merge-tree --write-tree).
var MinVersion = [3]int{2, 38, 0}

var versionRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^git version (\d+)\.(\d+)(?:\.(\d+))?`) })

// Version runs `git version` and returns the version as major, minor,
// patch and the raw line.
func Version(ctx context.Context) (v [3]int, raw string, err error) {
	out, err := run(ctx, "", "version")
	if err != nil {
		return v, "", fmt.Errorf("git version: %w", err)
	}
	raw = trim(out)
	m := versionRE().FindStringSubmatch(raw)
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
