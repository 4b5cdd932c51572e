package gitops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/grove-dev/grove"
)

// RiskSubCommits is a submodule commit only the worktree's own module
// store (<admin dir>/modules/<name>, or a .git inside the worktree) holds:
// not on the submodule's remotes as last fetched, not in the main
// repository's module store. Removing the worktree deletes it; a
// superproject commit pointing at it then points at nothing.
const RiskSubCommits = "submodule_commits"

// module is an initialised submodule of a worktree whose git dir removal
// would delete.
type module struct {
	name, path string // from .gitmodules; path worktree-relative
	gitDir     string // its git dir (absolute)
	common     string // the main repository's store for it: $COMMON/modules/<name>
}

// worktreeModules lists the initialised submodules of the worktree at dir
// (admin dir gitDir) whose git dir lies in gitDir or in dir. moved: dir
// was moved away from where its submodules' relative .git files point, so
// a submodule's git dir is its own .git directory or gitDir/modules/<name>.
func (r *Repo) worktreeModules(ctx context.Context, dir, gitDir string, moved bool) ([]module, error) {
	if !exists(filepath.Join(dir, ".gitmodules")) {
		return nil, nil
	}
	out, err := run(ctx, dir, "config", "-f", ".gitmodules", "--get-regexp", `^submodule\..*\.path$`)
	if err != nil {
		if exitCode(err) == 1 {
			return nil, nil // no entries
		}
		return nil, err
	}
	var mods []module
	for _, l := range lines(out) {
		key, p, ok := strings.Cut(l, " ")
		if !ok {
			return nil, fmt.Errorf("unexpected .gitmodules entry %q", l)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(key, "submodule."), ".path")
		if !validNestedPath(p) || strings.Contains(name, "..") {
			return nil, fmt.Errorf("unusable submodule %q at %q", name, p)
		}
		sub := filepath.Join(dir, filepath.FromSlash(p))
		if !exists(filepath.Join(sub, ".git")) {
			continue // not initialised: it holds nothing
		}
		gd, err := moduleGitDir(ctx, sub, gitDir, name, moved)
		if err != nil {
			return nil, fmt.Errorf("submodule %s: %w", p, err)
		}
		if !within(gd, gitDir) && !within(gd, dir) {
			continue // kept elsewhere: removal does not touch it
		}
		mods = append(mods, module{name: name, path: p, gitDir: gd, common: filepath.Join(r.CommonDir, "modules", filepath.FromSlash(name))})
	}
	return mods, nil
}

// moduleGitDir is the git dir of the initialised submodule named name at
// sub, asked of git, or (moved) found on disk.
func moduleGitDir(ctx context.Context, sub, gitDir, name string, moved bool) (string, error) {
	if moved {
		if fi, err := os.Stat(filepath.Join(sub, ".git")); err == nil && fi.IsDir() {
			return filepath.Join(sub, ".git"), nil
		}
		gd := filepath.Join(gitDir, "modules", filepath.FromSlash(name))
		if !exists(gd) {
			return "", fmt.Errorf("its git dir is not at %s", gd)
		}
		return gd, nil
	}
	out, err := run(ctx, sub, "rev-parse", "--path-format=absolute", "--git-dir")
	if err != nil {
		return "", err
	}
	return trim(out), nil
}

// within reports whether p is dir or below it (lexically, both cleaned).
func within(p, dir string) bool {
	p, dir = filepath.Clean(p), filepath.Clean(dir)
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}

// onlyHere returns the commits of the module m that its own store alone
// holds: reachable from its HEAD, branches, tags, stash and the commits
// the superproject worktree at dir records for it (HEAD and index), not
// from its remote-tracking refs, and absent from m.common.
func (r *Repo) onlyHere(ctx context.Context, dir string, m module) ([]string, error) {
	tips := []string{"HEAD", "--branches", "--tags", "--glob=refs/stash"}
	for _, rev := range []string{"HEAD:" + m.path, ":" + m.path} {
		if out, err := run(ctx, dir, "rev-parse", "--verify", "--quiet", rev); err == nil {
			tips = append(tips, trim(out))
		}
	}
	// --work-tree: the store's core.worktree may point where the worktree no
	// longer is (moved into the trash); rev-list needs no work tree.
	args := append([]string{"--git-dir=" + m.gitDir, "--work-tree=" + m.gitDir, "rev-list", "--ignore-missing"}, tips...)
	out, err := run(ctx, m.gitDir, append(args, "--not", "--remotes")...)
	if err != nil {
		return nil, err
	}
	cands := lines(out)
	if len(cands) == 0 || !exists(m.common) {
		return cands, nil
	}
	out, err = runGit(ctx, m.common, nil, strings.NewReader(strings.Join(cands, "\n")+"\n"),
		"--git-dir="+m.common, "cat-file", "--batch-check=%(objectname) %(objecttype)")
	if err != nil {
		return nil, err
	}
	var only []string
	for _, l := range lines(out) {
		if strings.HasSuffix(l, " missing") {
			only = append(only, strings.Fields(l)[0])
		}
	}
	return only, nil
}

// checkSubCommits adds a RiskSubCommits per submodule of the worktree at
// dir (admin dir gitDir) with commits only its own store holds.
func (r *Repo) checkSubCommits(ctx context.Context, dir, gitDir string, moved bool, rs *riskSet) {
	mods, err := r.worktreeModules(ctx, dir, gitDir, moved)
	if err != nil {
		rs.gitErr("submodules", err)
		return
	}
	for _, m := range mods {
		only, err := r.onlyHere(ctx, dir, m)
		switch {
		case err != nil:
			rs.gitErr("submodule "+m.path, err)
		case len(only) > 0:
			rs.addPath(RiskSubCommits, fmt.Sprintf("%s (%d commit(s) only this worktree's module store holds)", m.path, len(only)))
		}
	}
}

// KeepSubmoduleCommits brings the submodule commits that only the module
// stores of the worktree at wtPath hold into the main repository's module
// store ($COMMON/modules/<name>, made if absent, ready for `git submodule
// update --init` in the main checkout), under refs/grove/kept/<sha>, so
// that applying the worktree's change leaves no gitlink pointing at a
// commit that exists nowhere else. Call it before Apply; a failure is an
// error naming the submodule (apply must then refuse). A worktree without
// such commits costs one stat.
func (r *Repo) KeepSubmoduleCommits(ctx context.Context, wtPath string) error {
	wt, err := absPath(wtPath)
	if err != nil {
		return fmt.Errorf("keep submodule commits of %s: %w", wtPath, err)
	}
	if !exists(filepath.Join(wt, ".gitmodules")) {
		return nil
	}
	gd, err := GitDirOf(wt)
	if err != nil {
		return fmt.Errorf("keep submodule commits of %s: %w", wt, err)
	}
	mods, err := r.worktreeModules(ctx, wt, gd, false)
	if err != nil {
		return fmt.Errorf("keep submodule commits of %s: %w", wt, err)
	}
	for _, m := range mods {
		only, err := r.onlyHere(ctx, wt, m)
		if err != nil {
			return fmt.Errorf("keep commits of submodule %s: %w", m.path, err)
		}
		if len(only) == 0 {
			continue
		}
		if err := r.ensureModuleStore(ctx, wt, m); err != nil {
			return fmt.Errorf("keep commits of submodule %s: %w", m.path, err)
		}
		grove.Failpoint("keepsub.after-store")
		// Tips suffice: fetching a commit brings its ancestors.
		tips, err := run(ctx, m.gitDir, append([]string{"--git-dir=" + m.gitDir, "merge-base", "--independent"}, only...)...)
		if err != nil {
			return fmt.Errorf("keep commits of submodule %s: %w", m.path, err)
		}
		args := []string{"--git-dir=" + m.common, "-c", "uploadpack.allowAnySHA1InWant=true", "-c", "protocol.file.allow=always",
			"fetch", "--quiet", "--no-tags", "--no-write-fetch-head", m.gitDir}
		for _, c := range lines(tips) {
			args = append(args, "+"+c+":refs/grove/kept/"+c)
		}
		if _, err := run(ctx, m.common, args...); err != nil {
			return grove.Userf(grove.ErrAtRisk, "push the submodule's commits somewhere, or apply by hand",
				"submodule %s: its new commits could not be brought into %s: %v", m.path, m.common, err)
		}
	}
	return nil
}

// ensureModuleStore makes the main repository's store for m if it is
// missing: an empty non-bare repository whose origin is the submodule's
// URL, which `git submodule update --init` then adopts.
func (r *Repo) ensureModuleStore(ctx context.Context, wt string, m module) error {
	if exists(m.common) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(m.common), 0o755); err != nil {
		return err
	}
	if _, err := run(ctx, r.Root, "init", "--quiet", "--bare", m.common); err != nil {
		return err
	}
	if _, err := run(ctx, m.common, "--git-dir="+m.common, "config", "core.bare", "false"); err != nil {
		return err
	}
	if out, err := run(ctx, wt, "config", "-f", ".gitmodules", "submodule."+m.name+".url"); err == nil && trim(out) != "" {
		url := trim(out)
		if o, err := run(ctx, m.gitDir, "--git-dir="+m.gitDir, "config", "remote.origin.url"); err == nil && trim(o) != "" {
			url = trim(o) // already resolved against the superproject's remote
		}
		if _, err := run(ctx, m.common, "--git-dir="+m.common, "remote", "add", "origin", url); err != nil {
			return err
		}
	}
	return nil
}
