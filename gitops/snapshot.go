package gitops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Snapshot layout: a commit whose parent is the worktree's HEAD (none if
// HEAD was unborn) and whose tree holds
//
//	worktree/          every file as it is on disk: tracked, untracked and,
//	                   with includeIgnored, ignored (modes and symlinks too)
//	index/             the index as a tree (stage 0); for an index with
//	                   conflicts, entries live under index/<stage>/<path>
//	grove-snapshot     text: format version, HEAD, path, flags
//	index-entries      only with conflicts: `ls-files -s -z` of the index
//	assume-unchanged   NUL-separated paths with that flag (if any)
//	skip-worktree      NUL-separated paths with that flag (if any)
//	skip-absent        of those, the ones with no file on disk (if any)
const snapshotVersion = "grove-snapshot 1"

type indexEntry struct {
	tag   byte // ls-files -v tag
	mode  string
	oid   string
	stage string
	path  string
}

// readIndex lists the index GIT_INDEX_FILE (in env) names.
func readIndex(ctx context.Context, dir string, env []string) ([]indexEntry, error) {
	out, err := runGit(ctx, dir, env, nil, "ls-files", "-s", "-v", "-z")
	if err != nil {
		return nil, err
	}
	var ents []indexEntry
	for _, e := range fields0(out) {
		// "<tag> <mode> <oid> <stage>\t<path>"
		meta, p, ok := strings.Cut(e, "\t")
		f := strings.Fields(meta)
		if !ok || len(f) != 4 || len(f[0]) != 1 {
			return nil, fmt.Errorf("unexpected ls-files entry %q", e)
		}
		ents = append(ents, indexEntry{tag: f[0][0], mode: f[1], oid: f[2], stage: f[3], path: p})
	}
	return ents, nil
}

func join0(paths []string) string {
	if len(paths) == 0 {
		return ""
	}
	return strings.Join(paths, "\x00") + "\x00"
}

// Snapshot records the full state of the worktree at wtPath — files
// (tracked, untracked, and ignored if includeIgnored), the index (staged
// state, conflicts, assume-unchanged and skip-worktree flags) and HEAD —
// as one commit, points ref at it (no compare-and-swap) and returns the
// commit. The worktree and its index are not touched: the files are
// staged into a temporary index (GIT_INDEX_FILE, seeded from a copy of the
// real one). Not recorded: empty directories, the contents of nested
// repositories and submodules (their HEAD commit is), in-progress
// operations, and intent-to-add marks.
func (r *Repo) Snapshot(ctx context.Context, wtPath, ref string, includeIgnored bool) (string, error) {
	wt, err := absPath(wtPath)
	if err != nil {
		return "", fmt.Errorf("snapshot %s: %w", wtPath, err)
	}
	if !validRefName(ref) {
		return "", fmt.Errorf("snapshot %s: invalid ref %q", wt, ref)
	}
	commit, err := r.snapshot(ctx, wt, includeIgnored)
	if err != nil {
		return "", fmt.Errorf("snapshot %s: %w", wt, err)
	}
	if err := r.SetRef(ctx, ref, commit); err != nil {
		return "", fmt.Errorf("snapshot %s: %w", wt, err)
	}
	return commit, nil
}

func (r *Repo) snapshot(ctx context.Context, wt string, includeIgnored bool) (string, error) {
	out, err := run(ctx, wt, "rev-parse", "--path-format=absolute", "--git-common-dir", "--git-dir", "--show-toplevel")
	if err != nil {
		return "", err
	}
	l := lines(out)
	if len(l) != 3 {
		return "", fmt.Errorf("unexpected rev-parse output %q", out)
	}
	if !samePath(l[0], r.CommonDir) {
		return "", fmt.Errorf("%s belongs to another repository", wt)
	}
	if !samePath(l[2], wt) {
		return "", fmt.Errorf("%s is not the top of a worktree", wt)
	}
	gitDir := l[1]
	head := ""
	if out, err := run(ctx, wt, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"); err == nil {
		head = trim(out)
	} else if exitCode(err) != 1 {
		return "", err
	}

	tmp, err := os.MkdirTemp("", "grove-snapshot-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	idx := filepath.Join(tmp, "index")
	if err := copyFile(filepath.Join(gitDir, "index"), idx); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	env := []string{"GIT_INDEX_FILE=" + idx}

	ents, err := readIndex(ctx, wt, env)
	if err != nil {
		return "", err
	}
	var assume, skip, absent []string
	var listing strings.Builder
	conflicted := false
	for _, e := range ents {
		if e.stage != "0" {
			conflicted = true
		}
		fmt.Fprintf(&listing, "%s %s %s\t%s\x00", e.mode, e.oid, e.stage, e.path)
		if e.stage != "0" {
			continue
		}
		if e.tag >= 'a' && e.tag <= 'z' {
			assume = append(assume, e.path)
		}
		if e.tag == 'S' || e.tag == 's' {
			skip = append(skip, e.path)
			if !exists(filepath.Join(wt, e.path)) {
				absent = append(absent, e.path)
			}
		}
	}

	// The index as a tree (before the temporary index is changed).
	var indexTree string
	if !conflicted {
		out, err := runGit(ctx, wt, env, nil, "write-tree")
		if err != nil {
			return "", err
		}
		indexTree = trim(out)
	} else {
		var info strings.Builder
		for _, e := range ents {
			fmt.Fprintf(&info, "%s %s 0\t%s/%s\x00", e.mode, e.oid, e.stage, e.path)
		}
		stageEnv := []string{"GIT_INDEX_FILE=" + filepath.Join(tmp, "stages")}
		if _, err := runGit(ctx, wt, stageEnv, strings.NewReader(info.String()), "update-index", "-z", "--index-info"); err != nil {
			return "", err
		}
		out, err := runGit(ctx, wt, stageEnv, nil, "write-tree")
		if err != nil {
			return "", err
		}
		indexTree = trim(out)
	}

	// The files: let add see through the flags that hide content.
	present := make([]string, 0, len(skip))
	for _, p := range skip {
		if exists(filepath.Join(wt, p)) {
			present = append(present, p)
		}
	}
	if len(assume) > 0 {
		if _, err := runGit(ctx, wt, env, strings.NewReader(join0(assume)), "update-index", "--no-assume-unchanged", "-z", "--stdin"); err != nil {
			return "", err
		}
	}
	if len(present) > 0 {
		if _, err := runGit(ctx, wt, env, strings.NewReader(join0(present)), "update-index", "--no-skip-worktree", "-z", "--stdin"); err != nil {
			return "", err
		}
	}
	add := []string{"add", "-A"}
	if includeIgnored {
		add = append(add, "--force")
	}
	if _, err := runGit(ctx, wt, env, nil, add...); err != nil {
		return "", err
	}
	out, err = runGit(ctx, wt, env, nil, "write-tree")
	if err != nil {
		return "", err
	}
	wtTree := trim(out)

	blob := func(content string) (string, error) {
		out, err := runGit(ctx, wt, nil, strings.NewReader(content), "hash-object", "-w", "-t", "blob", "--no-filters", "--stdin")
		return trim(out), err
	}
	meta := fmt.Sprintf("%s\nhead %s\npath %s\nignored %v\nconflicts %v\n", snapshotVersion, head, wt, includeIgnored, conflicted)
	var tree strings.Builder
	fmt.Fprintf(&tree, "040000 tree %s\tworktree\x00040000 tree %s\tindex\x00", wtTree, indexTree)
	for _, b := range []struct{ name, content string }{
		{"grove-snapshot", meta},
		{"assume-unchanged", join0(assume)},
		{"skip-worktree", join0(skip)},
		{"skip-absent", join0(absent)},
		{"index-entries", map[bool]string{true: listing.String()}[conflicted]},
	} {
		if b.content == "" {
			continue
		}
		id, err := blob(b.content)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&tree, "100644 blob %s\t%s\x00", id, b.name)
	}
	out, err = runGit(ctx, wt, nil, strings.NewReader(tree.String()), "mktree", "-z")
	if err != nil {
		return "", err
	}
	top := trim(out)

	id, err := identityArgs(ctx, wt)
	if err != nil {
		return "", err
	}
	args := append(id, "commit-tree", "--no-gpg-sign", "-m", "grove snapshot of "+wt)
	if head != "" {
		args = append(args, "-p", head)
	}
	out, err = run(ctx, wt, append(args, top)...)
	if err != nil {
		return "", err
	}
	return trim(out), nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Restore recreates the worktree a snapshot (ref: a ref or commit made by
// Snapshot) recorded, at path on a new branch starting at the snapshot's
// HEAD: the same files (bytes, executable bits, symlinks), the same index
// (so `git status` reads the same) and the same assume-unchanged and
// skip-worktree flags. Creating the worktree follows CreateWorktree
// (idempotent, cleans up after itself on failure); calling Restore again
// for the same path and branch lays the snapshot over that worktree again.
func (r *Repo) Restore(ctx context.Context, ref, path, branch string) error {
	if err := checkRev(ref); err != nil {
		return fmt.Errorf("restore %s: %w", ref, err)
	}
	out, err := run(ctx, r.Root, "rev-parse", "--verify", "--quiet", "--end-of-options", ref+"^{commit}")
	if err != nil {
		return fmt.Errorf("restore %s: no such snapshot: %w", ref, err)
	}
	snap := trim(out)
	out, err = run(ctx, r.Root, "ls-tree", "-z", snap)
	if err != nil {
		return fmt.Errorf("restore %s: %w", ref, err)
	}
	obj := map[string]string{}
	for _, e := range fields0(out) {
		meta, name, _ := strings.Cut(e, "\t")
		if f := strings.Fields(meta); len(f) == 3 {
			obj[name] = f[2]
		}
	}
	read := func(name string) (string, error) {
		id, ok := obj[name]
		if !ok {
			return "", nil
		}
		out, err := run(ctx, r.Root, "cat-file", "blob", id)
		return string(out), err
	}
	meta, err := read("grove-snapshot")
	if err != nil {
		return fmt.Errorf("restore %s: %w", ref, err)
	}
	if !strings.HasPrefix(meta, snapshotVersion+"\n") || obj["worktree"] == "" || obj["index"] == "" {
		return fmt.Errorf("restore %s: not a grove snapshot", ref)
	}
	out, err = run(ctx, r.Root, "rev-parse", "--verify", "--quiet", snap+"^1")
	if err != nil {
		return fmt.Errorf("restore %s: snapshot has no HEAD commit to start from", ref)
	}
	head := trim(out)
	lists := map[string]string{}
	for _, name := range []string{"assume-unchanged", "skip-worktree", "skip-absent", "index-entries"} {
		if lists[name], err = read(name); err != nil {
			return fmt.Errorf("restore %s: %w", ref, err)
		}
	}
	fill := func(ctx context.Context, wt string, fresh bool) error {
		if !fresh {
			// Laying it over an earlier attempt: forget that index and its
			// flags, which would make read-tree refuse.
			gd, err := gitDirOf(wt)
			if err != nil {
				return err
			}
			if err := os.Remove(filepath.Join(gd, "index")); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		// Files first (the index then says "worktree tree"), ...
		if _, err := runRetry(ctx, wt, "read-tree", "--reset", "-u", obj["worktree"]); err != nil {
			return err
		}
		// ... then the recorded index, keeping stat data where it matches.
		if entries := lists["index-entries"]; entries != "" {
			if _, err := runRetry(ctx, wt, "read-tree", "--empty"); err != nil {
				return err
			}
			if _, err := runGit(ctx, wt, nil, strings.NewReader(entries), "update-index", "-z", "--index-info"); err != nil {
				return err
			}
		} else if _, err := runRetry(ctx, wt, "read-tree", "-m", obj["index"]); err != nil {
			return err
		}
		if _, err := run(ctx, wt, "update-index", "-q", "--refresh"); err != nil && exitCode(err) != 1 {
			return err
		}
		for flag, name := range map[string]string{"--assume-unchanged": "assume-unchanged", "--skip-worktree": "skip-worktree"} {
			if lists[name] == "" {
				continue
			}
			if _, err := runGit(ctx, wt, nil, strings.NewReader(lists[name]), "update-index", flag, "-z", "--stdin"); err != nil {
				return err
			}
		}
		for _, p := range fields0([]byte(lists["skip-absent"])) {
			if err := os.Remove(filepath.Join(wt, p)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	}
	if err := r.createWorktree(ctx, path, branch, head, fill); err != nil {
		return fmt.Errorf("restore %s: %w", ref, err)
	}
	return nil
}
