package jobs

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// repairLinks undoes what a sandboxed agent may have done to the links
// between its worktree and the repository, before the daemon runs git
// there again (the diff stage): the agent can write its admin dir and its
// worktree, so it can rewrite `commondir` (pointing git at a common dir,
// and so a config, of its own), `gitdir`, or the worktree's `.git`. A
// link that does not lead where it must is rewritten; a `.git` that is
// not a file (a directory or a symlink the agent put there) is renamed
// aside inside the worktree, never deleted. It returns what it repaired.
func repairLinks(worktree, admin, commonDir string) ([]string, error) {
	var fixed []string
	same := func(a, b string) bool {
		ra, err1 := filepath.EvalSymlinks(a)
		rb, err2 := filepath.EvalSymlinks(b)
		return err1 == nil && err2 == nil && ra == rb
	}
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return strings.TrimSpace(string(b))
	}
	write := func(p, content string) error {
		tmp := p + ".grove-tmp"
		if err := os.WriteFile(tmp, []byte(content+"\n"), 0o644); err != nil {
			return fmt.Errorf("repair %s: %w", p, err)
		}
		if err := os.Rename(tmp, p); err != nil {
			return fmt.Errorf("repair %s: %w", p, err)
		}
		fixed = append(fixed, p)
		return nil
	}
	cd := filepath.Join(admin, "commondir")
	if c := read(cd); c == "" || !same(resolveFrom(admin, c), commonDir) {
		if err := write(cd, "../.."); err != nil {
			return fixed, err
		}
	}
	dotgit := filepath.Join(worktree, ".git")
	if gd := filepath.Join(admin, "gitdir"); read(gd) != dotgit {
		if err := write(gd, dotgit); err != nil {
			return fixed, err
		}
	}
	fi, err := os.Lstat(dotgit)
	switch {
	case err != nil && !os.IsNotExist(err):
		return fixed, fmt.Errorf("repair %s: %w", dotgit, err)
	case err == nil && !fi.Mode().IsRegular():
		aside := fmt.Sprintf("%s.agent-%d", dotgit, time.Now().UnixNano())
		if err := os.Rename(dotgit, aside); err != nil {
			return fixed, fmt.Errorf("move aside %s: %w", dotgit, err)
		}
		fixed = append(fixed, aside)
		fallthrough
	case err != nil: // gone
		return fixed, write(dotgit, "gitdir: "+admin)
	}
	if g, ok := strings.CutPrefix(read(dotgit), "gitdir: "); !ok || !same(resolveFrom(worktree, g), admin) {
		return fixed, write(dotgit, "gitdir: "+admin)
	}
	return fixed, nil
}

func resolveFrom(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}
