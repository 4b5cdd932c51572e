package gitops

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/grove-dev/grove"
)

// InitSubmodules checks out the submodules of the new worktree at dir
// (those .gitmodules lists and HEAD records as gitlinks) from the main
// repository's own module stores ($GIT_COMMON_DIR/modules/<name>), never
// from the network: the clone's URL is that local store (given with -c,
// so the repository's config is not changed), and its origin is set to the
// URL of .gitmodules afterwards. A submodule already checked out is left
// alone. A submodule whose commit the main repository does not hold is a
// *grove.UserError naming it (the main checkout must fetch it first). It
// returns the paths it checked out.
func (r *Repo) InitSubmodules(ctx context.Context, dir string) ([]string, error) {
	if !exists(filepath.Join(dir, ".gitmodules")) {
		return nil, nil
	}
	out, err := run(ctx, dir, "config", "-f", ".gitmodules", "--get-regexp", `^submodule\..*\.path$`)
	if err != nil {
		if exitCode(err) == 1 {
			return nil, nil
		}
		return nil, fmt.Errorf("read .gitmodules in %s: %w", dir, err)
	}
	var done []string
	for _, l := range lines(out) {
		key, p, ok := strings.Cut(l, " ")
		if !ok {
			return done, fmt.Errorf("unexpected .gitmodules entry %q", l)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(key, "submodule."), ".path")
		if !validNestedPath(p) || strings.Contains(name, "..") {
			return done, fmt.Errorf("unusable submodule %q at %q", name, p)
		}
		ok, err := r.initSubmodule(ctx, dir, name, p)
		if err != nil {
			return done, err
		}
		if ok {
			done = append(done, p)
		}
	}
	return done, nil
}

// initSubmodule checks out one submodule (name at path p) of dir; false
// when there is nothing to do (not a gitlink at HEAD, already there).
func (r *Repo) initSubmodule(ctx context.Context, dir, name, p string) (bool, error) {
	if exists(filepath.Join(dir, filepath.FromSlash(p), ".git")) {
		return false, nil
	}
	tree, err := run(ctx, dir, "ls-tree", "HEAD", "--end-of-options", "--", p)
	if err != nil {
		return false, fmt.Errorf("read gitlink of submodule %s: %w", p, err)
	}
	f := strings.Fields(trim(tree))
	if len(f) < 3 || f[0] != "160000" {
		return false, nil // not recorded at HEAD
	}
	commit := f[2]
	store := filepath.Join(r.CommonDir, "modules", filepath.FromSlash(name))
	hint := fmt.Sprintf("fetch it in the main checkout: git -C %s submodule update --init -- %s; then grove retry", r.Root, p)
	if !exists(store) {
		return false, grove.Userf(grove.ErrUsage, hint,
			"submodule %s (%s): the main repository has no local copy of it (%s missing), and grove does not fetch", name, p, store)
	}
	if _, err := run(ctx, store, "--git-dir", store, "cat-file", "-e", commit+"^{commit}"); err != nil {
		return false, grove.Userf(grove.ErrUsage, hint,
			"submodule %s (%s): commit %.12s is not in the main repository's copy %s, and grove does not fetch", name, p, commit, store)
	}
	if _, err := run(ctx, dir, "-c", "protocol.file.allow=always", "-c", "submodule."+name+".url="+store,
		"submodule", "update", "--init", "--no-recommend-shallow", "--", p); err != nil {
		return false, fmt.Errorf("check out submodule %s (%s) from %s: %w", name, p, store, err)
	}
	if url, err := run(ctx, dir, "config", "-f", ".gitmodules", "--get", "submodule."+name+".url"); err == nil && trim(url) != "" {
		if _, err := run(ctx, filepath.Join(dir, filepath.FromSlash(p)), "remote", "set-url", "origin", trim(url)); err != nil {
			return true, fmt.Errorf("set origin of submodule %s: %w", p, err)
		}
	}
	return true, nil
}
