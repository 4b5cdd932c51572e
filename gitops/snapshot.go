package gitops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/grove-dev/grove"
)

// Snapshot layout: a commit whose parent is the worktree's HEAD (none if
// HEAD was unborn) and whose tree holds
//
//	worktree/          every file as it is on disk: tracked, untracked,
//	                   ignored files the gate counts as at risk (not in
//	                   the keep list) and, with IncludeIgnored, every
//	                   ignored file (modes and symlinks too); nested
//	                   repositories are left out of it
//	index/             the index as a tree (stage 0); for an index with
//	                   conflicts, entries live under index/<stage>/<path>
//	nested/<i>/files   nested repository i captured raw, its .git entries
//	                   named .grove-dotgit (nested/<i>/empty-dirs: NUL-
//	                   separated empty directories)
//	nested-repos       NUL-separated worktree-relative paths of nested/<i>
//	gitdir/            operation state files of the worktree's git dir
//	                   (see opStateFiles)
//	op-refs            "<sha> <ref>" lines of refs/bisect/*, refs/rewritten/*
//	lock               the worktree lock's reason (if locked)
//	grove-snapshot     text: format version, HEAD, path, flags, symref,
//	                   operations, the branch a rebase/bisect returns to
//	index-entries      only with conflicts: `ls-files -s -z` of the index
//	assume-unchanged   NUL-separated paths with that flag (if any)
//	skip-worktree      NUL-separated paths with that flag (if any)
//	skip-absent        of those, the ones with no file on disk (if any)
//	worktree-refs      "<sha> <ref>" lines of refs/worktree/* (if any)
//
// The commit's first parent is HEAD; the commits refs/worktree/* point at,
// and (reduced to the independent ones) the commits the HEAD reflog and the
// operation state name, are further parents, so they stay reachable once
// the worktree is gone.
const snapshotVersion = "grove-snapshot 2"

// snapshotVersions are the formats Restore reads.
var snapshotVersions = []string{"grove-snapshot 1", snapshotVersion}

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

// DefaultSnapshotMaxBytes is the size limit of a snapshot's ignored files
// and nested repositories when SnapshotOptions.MaxBytes is 0: 1 GiB.
const DefaultSnapshotMaxBytes int64 = 1 << 30

// SnapshotOptions tune SnapshotWith.
type SnapshotOptions struct {
	// IncludeIgnored records every ignored file, reproducible ones too.
	IncludeIgnored bool
	// KeepIgnored are the ignored paths left out as reproducible (the
	// gate's GateOptions.KeepIgnored); nil means DefaultKeepIgnored. Every
	// other ignored file is recorded. Nested repositories are recorded
	// wherever they are.
	KeepIgnored []string
	// DropIgnored records no ignored file at all (nested repositories in
	// ignored directories still are): the explicit way past MaxBytes.
	DropIgnored bool
	// MaxBytes limits the bytes of ignored files and nested repositories
	// a snapshot records: over it, SnapshotWith refuses (a
	// *grove.UserError wrapping grove.ErrAtRisk naming the size) before
	// writing them. 0 means DefaultSnapshotMaxBytes, < 0 no limit.
	MaxBytes int64
}

// Snapshot is SnapshotWith with IncludeIgnored set to includeIgnored and
// the other options at their defaults.
func (r *Repo) Snapshot(ctx context.Context, wtPath, ref string, includeIgnored bool) (string, error) {
	return r.SnapshotWith(ctx, wtPath, ref, SnapshotOptions{IncludeIgnored: includeIgnored})
}

// SnapshotWith records the full state of the worktree at wtPath — files
// (tracked, untracked, ignored files not in KeepIgnored, every ignored file
// with IncludeIgnored, none with DropIgnored), nested repositories whole
// (their .git and their files, wherever they are), the index (staged
// state, conflicts, assume-unchanged and skip-worktree flags), HEAD and
// refs/worktree/* — as one commit, points ref at it (no compare-and-swap)
// and returns the commit. The worktree and its index are not touched: the
// files are staged into a temporary index (GIT_INDEX_FILE, seeded from a
// copy of the real one). Also recorded: the operation in progress, its
// refs and the lock (see the layout), and every commit the HEAD reflog
// names. Not recorded: empty directories of the worktree (those of nested
// repositories are), the working trees of submodules (their HEAD commit
// is), sockets and FIFOs, and intent-to-add marks. Submodule commits only the worktree's module store
// holds are first copied into the main repository's module store
// (KeepSubmoduleCommits). Snapshotting the same unchanged worktree twice
// gives the same tree.
func (r *Repo) SnapshotWith(ctx context.Context, wtPath, ref string, opt SnapshotOptions) (string, error) {
	wt, err := absPath(wtPath)
	if err != nil {
		return "", fmt.Errorf("snapshot %s: %w", wtPath, err)
	}
	if !validRefName(ref) {
		return "", fmt.Errorf("snapshot %s: invalid ref %q", wt, ref)
	}
	commit, err := r.SnapshotCommit(ctx, wt, opt)
	if err != nil {
		return "", err
	}
	if err := r.SetRef(ctx, ref, commit); err != nil {
		return "", fmt.Errorf("snapshot %s: %w", wt, err)
	}
	return commit, nil
}

// snapshotState is a snapshot's tree before it is committed.
type snapshotState struct {
	wt      string   // the worktree's path, as recorded
	dir     string   // where git runs to commit
	tree    string   // the top tree (layout above)
	parents []string // HEAD (if born), then refs/worktree/* commits
}

// commit writes the snapshot commit.
func (s snapshotState) commit(ctx context.Context) (string, error) {
	id, err := identityArgs(ctx, s.dir)
	if err != nil {
		return "", err
	}
	args := append(id, "commit-tree", "--no-gpg-sign", "-m", "grove snapshot of "+s.wt)
	for _, p := range s.parents {
		args = append(args, "-p", p)
	}
	out, err := run(ctx, s.dir, append(args, s.tree)...)
	if err != nil {
		return "", err
	}
	return trim(out), nil
}

// snapshotTree builds a snapshot's tree (writing its objects) without
// committing it. A worktree whose directory is gone is snapshotMissing.
func (r *Repo) snapshotTree(ctx context.Context, wt string, opt SnapshotOptions) (snapshotState, error) {
	if _, err := os.Stat(wt); errors.Is(err, os.ErrNotExist) {
		return r.snapshotMissing(ctx, wt, opt)
	}
	return r.snapshotDir(ctx, wt, wt, opt, false)
}

// snapshotDir is snapshotTree of the worktree whose top is dir, recorded
// as the worktree at wt; missing says dir stands in for a worktree whose
// directory is gone.
func (r *Repo) snapshotDir(ctx context.Context, dir, wt string, opt SnapshotOptions, missing bool) (snapshotState, error) {
	st := snapshotState{wt: wt, dir: r.Root}
	includeIgnored := opt.IncludeIgnored && !opt.DropIgnored
	keep := opt.KeepIgnored
	if keep == nil {
		keep = DefaultKeepIgnored
	}
	out, err := run(ctx, dir, "rev-parse", "--path-format=absolute", "--git-common-dir", "--git-dir", "--show-toplevel")
	if err != nil {
		return st, err
	}
	l := lines(out)
	if len(l) != 3 {
		return st, fmt.Errorf("unexpected rev-parse output %q", out)
	}
	if !samePath(l[0], r.CommonDir) {
		return st, fmt.Errorf("%s belongs to another repository", wt)
	}
	if !samePath(l[2], dir) {
		return st, fmt.Errorf("%s is not the top of a worktree", wt)
	}
	gitDir := l[1]
	head := ""
	if out, err := run(ctx, dir, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"); err == nil {
		head = trim(out)
		st.parents = append(st.parents, head)
	} else if exitCode(err) != 1 {
		return st, err
	}
	wtRefs, refCommits, err := worktreeRefs(ctx, dir)
	if err != nil {
		return st, err
	}
	for _, c := range refCommits {
		if !slices.Contains(st.parents, c) {
			st.parents = append(st.parents, c)
		}
	}
	tmp, err := os.MkdirTemp("", "grove-snapshot-")
	if err != nil {
		return st, err
	}
	defer os.RemoveAll(tmp)

	// Commits only the HEAD reflog or an operation in progress holds stay
	// reachable as parents too.
	reflog, err := headReflog(ctx, dir)
	if err != nil {
		return st, err
	}
	ops, err := captureOpState(ctx, dir, nil, gitDir, tmp)
	if err != nil {
		return st, err
	}
	more, err := keepParents(ctx, dir, st.parents, append(reflog, ops.commits...))
	if err != nil {
		return st, err
	}
	st.parents = append(st.parents, more...)
	lock := ""
	if b, err := os.ReadFile(filepath.Join(gitDir, "locked")); err == nil {
		lock = string(b)
		if lock == "" {
			lock = "locked" // git worktree lock without --reason
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return st, err
	}
	symref := ""
	if out, err := run(ctx, dir, "symbolic-ref", "--quiet", "HEAD"); err == nil {
		symref = trim(out)
	} else if exitCode(err) != 1 {
		return st, err
	}
	origBranch, origTip := "", ""
	if symref == "" && len(ops.names) > 0 {
		if origBranch = origBranchOf(gitDir); origBranch != "" {
			if origTip, err = r.RefCommit(ctx, "refs/heads/"+origBranch); err != nil {
				return st, err
			}
		}
	}
	idx := filepath.Join(tmp, "index")
	if err := copyFile(filepath.Join(gitDir, "index"), idx); err != nil && !errors.Is(err, os.ErrNotExist) {
		return st, err
	}
	env := []string{"GIT_INDEX_FILE=" + idx}

	ents, err := readIndex(ctx, dir, env)
	if err != nil {
		return st, err
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
			if !exists(filepath.Join(dir, e.path)) {
				absent = append(absent, e.path)
			}
		}
	}

	// The index as a tree (before the temporary index is changed).
	var indexTree string
	if !conflicted {
		out, err := runGit(ctx, dir, env, nil, "write-tree")
		if err != nil {
			return st, err
		}
		indexTree = trim(out)
	} else {
		var info strings.Builder
		for _, e := range ents {
			fmt.Fprintf(&info, "%s %s 0\t%s/%s\x00", e.mode, e.oid, e.stage, e.path)
		}
		stageEnv := []string{"GIT_INDEX_FILE=" + filepath.Join(tmp, "stages")}
		if _, err := runGit(ctx, dir, stageEnv, strings.NewReader(info.String()), "update-index", "-z", "--index-info"); err != nil {
			return st, err
		}
		out, err := runGit(ctx, dir, stageEnv, nil, "write-tree")
		if err != nil {
			return st, err
		}
		indexTree = trim(out)
	}

	// The files: let add see through the flags that hide content.
	present := make([]string, 0, len(skip))
	for _, p := range skip {
		if exists(filepath.Join(dir, p)) {
			present = append(present, p)
		}
	}
	if len(assume) > 0 {
		if _, err := runGit(ctx, dir, env, strings.NewReader(join0(assume)), "update-index", "--no-assume-unchanged", "-z", "--stdin"); err != nil {
			return st, err
		}
	}
	if len(present) > 0 {
		if _, err := runGit(ctx, dir, env, strings.NewReader(join0(present)), "update-index", "--no-skip-worktree", "-z", "--stdin"); err != nil {
			return st, err
		}
	}
	// Nested repositories are recorded whole, apart: the worktree tree
	// leaves them out.
	untrackedDirs, err := runGit(ctx, dir, env, nil, "ls-files", "-z", "--others", "--exclude-standard", "--directory")
	if err != nil {
		return st, err
	}
	out, err = runGit(ctx, dir, env, nil, "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory")
	if err != nil {
		return st, err
	}
	ignored := fields0(out)
	found, err := findNested(dir, append(fields0(untrackedDirs), ignored...))
	if err != nil {
		return st, err
	}
	nested := topNested(found)
	// git add refuses a pathspec naming an ignored path, even an exclude:
	// the plain add (which skips ignored paths anyway) gets only the
	// others.
	var exclude, excludeUntracked []string
	for _, p := range nested {
		x := ":(exclude,literal)" + p
		exclude = append(exclude, x)
		if !slices.ContainsFunc(ignored, func(i string) bool { return p == strings.TrimSuffix(i, "/") || strings.HasPrefix(p, i) }) {
			excludeUntracked = append(excludeUntracked, x)
		}
	}
	var risky []string
	switch {
	case opt.DropIgnored:
	case includeIgnored:
		risky = ignored
	default:
		for _, p := range ignored {
			if !keptIgnored(p, keep) {
				risky = append(risky, p)
			}
		}
	}
	if err := checkSnapshotSize(dir, risky, nested, opt.MaxBytes); err != nil {
		return st, err
	}
	if _, err := runGit(ctx, dir, env, nil, append([]string{"add", "-A", "--", "."}, excludeUntracked...)...); err != nil {
		return st, err
	}
	if len(risky) > 0 {
		// Ignored files the gate counts as at risk are work too.
		var spec strings.Builder
		for _, p := range risky {
			spec.WriteString(":(literal)" + p + "\x00")
		}
		for _, x := range exclude {
			spec.WriteString(x + "\x00")
		}
		if _, err := runGit(ctx, dir, env, strings.NewReader(spec.String()), "add", "--force",
			"--pathspec-from-file=-", "--pathspec-file-nul"); err != nil {
			return st, err
		}
	}
	nestedTree, err := captureNested(ctx, dir, nested, tmp)
	if err != nil {
		return st, err
	}
	out, err = runGit(ctx, dir, env, nil, "write-tree")
	if err != nil {
		return st, err
	}
	wtTree := trim(out)

	blob := func(content string) (string, error) {
		out, err := runGit(ctx, dir, nil, strings.NewReader(content), "hash-object", "-w", "-t", "blob", "--no-filters", "--stdin")
		return trim(out), err
	}
	meta := fmt.Sprintf("%s\nhead %s\npath %s\nignored %v\nconflicts %v\n", snapshotVersion, head, wt, includeIgnored, conflicted)
	if missing {
		meta += "missing true\n"
	}
	if opt.DropIgnored {
		meta += "drop-ignored true\n"
	}
	meta += "symref " + symref + "\n"
	if len(ops.names) > 0 {
		meta += "operations " + strings.Join(ops.names, ", ") + "\n"
	}
	if origBranch != "" {
		meta += "orig-branch " + origBranch + "\norig-tip " + origTip + "\n"
	}
	if opt.KeepIgnored != nil {
		meta += "keep " + strings.Join(opt.KeepIgnored, "\t") + "\n"
	}
	var tree strings.Builder
	fmt.Fprintf(&tree, "040000 tree %s\tworktree\x00040000 tree %s\tindex\x00", wtTree, indexTree)
	if nestedTree != "" {
		fmt.Fprintf(&tree, "040000 tree %s\tnested\x00", nestedTree)
	}
	if ops.tree != "" {
		fmt.Fprintf(&tree, "040000 tree %s\tgitdir\x00", ops.tree)
	}
	for _, b := range []struct{ name, content string }{
		{"grove-snapshot", meta},
		{"assume-unchanged", join0(assume)},
		{"skip-worktree", join0(skip)},
		{"skip-absent", join0(absent)},
		{"index-entries", map[bool]string{true: listing.String()}[conflicted]},
		{"worktree-refs", wtRefs},
		{"nested-repos", join0(nested)},
		{"op-refs", ops.refs},
		{"lock", lock},
	} {
		if b.content == "" {
			continue
		}
		id, err := blob(b.content)
		if err != nil {
			return st, err
		}
		fmt.Fprintf(&tree, "100644 blob %s\t%s\x00", id, b.name)
	}
	out, err = runGit(ctx, dir, nil, strings.NewReader(tree.String()), "mktree", "-z")
	if err != nil {
		return st, err
	}
	st.tree = trim(out)
	return st, nil
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

// Restore is RestoreWith without the notes.
func (r *Repo) Restore(ctx context.Context, ref, path, branch string) error {
	_, err := r.RestoreWith(ctx, ref, path, branch)
	return err
}

// RestoreWith recreates the worktree a snapshot (ref: a ref or commit made
// by Snapshot) recorded, at path on a new branch starting at the
// snapshot's HEAD: the same files (bytes, executable bits, symlinks), the
// same index (so `git status` reads the same), the same assume-unchanged
// and skip-worktree flags, the same refs/worktree/*, nested repositories
// whole (their `git log --all`, `git status`, stashes), and the operation
// in progress (MERGE_HEAD, CHERRY_PICK_HEAD, REVERT_HEAD, rebase and
// bisect state and refs, sequencer, messages: `git merge --continue`
// works), the worktree's lock with its reason and its config.worktree. A
// detached HEAD comes back as the branch, at the same commit, except
// during a rebase or bisect: HEAD is then detached as it was, the branch
// is where the operation's own branch was, and the operation's files name
// the new branch. Creating the worktree follows CreateWorktree
// (idempotent, cleans up after itself on failure); calling RestoreWith
// again for the same path and branch lays the snapshot over that worktree
// again (not after a rebase or bisect was restored: HEAD is then
// detached). notes name what came back differently from how it was and
// what the snapshot did not hold.
func (r *Repo) RestoreWith(ctx context.Context, ref, path, branch string) (notes []string, err error) {
	if err := checkRev(ref); err != nil {
		return nil, fmt.Errorf("restore %s: %w", ref, err)
	}
	out, err := run(ctx, r.Root, "rev-parse", "--verify", "--quiet", "--end-of-options", ref+"^{commit}")
	if err != nil {
		return nil, fmt.Errorf("restore %s: no such snapshot: %w", ref, err)
	}
	snap := trim(out)
	out, err = run(ctx, r.Root, "ls-tree", "-z", snap)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", ref, err)
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
		return nil, fmt.Errorf("restore %s: %w", ref, err)
	}
	if !knownSnapshot(meta) || obj["worktree"] == "" || obj["index"] == "" {
		return nil, fmt.Errorf("restore %s: not a grove snapshot", ref)
	}
	m := snapshotMeta(meta)
	head := m["head"]
	// An operation that runs on a detached HEAD (rebase, bisect) comes
	// back detached, its branch at the tip it returns to.
	symref, hasSymref := m["symref"]
	detach := hasSymref && symref == "" && m["operations"] != ""
	if head == "" {
		return nil, fmt.Errorf("restore %s: snapshot has no HEAD commit to start from", ref)
	}
	lists := map[string]string{}
	for _, name := range []string{"assume-unchanged", "skip-worktree", "skip-absent", "index-entries", "worktree-refs", "nested-repos", "op-refs", "lock"} {
		if lists[name], err = read(name); err != nil {
			return nil, fmt.Errorf("restore %s: %w", ref, err)
		}
	}
	fill := func(ctx context.Context, wt string, fresh bool) error {
		if !fresh {
			// Laying it over an earlier attempt: forget that index and its
			// flags, which would make read-tree refuse.
			gd, err := GitDirOf(wt)
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
		for _, l := range lines([]byte(lists["worktree-refs"])) {
			sha, name, ok := strings.Cut(l, " ")
			if !ok || !strings.HasPrefix(name, "refs/worktree/") || !validRefName(name) || checkRev(sha) != nil {
				return fmt.Errorf("bad worktree-refs line %q", l)
			}
			if _, err := runRetry(ctx, wt, "update-ref", "-m", "grove restore", "--end-of-options", name, sha); err != nil {
				return err
			}
		}
		if err := restoreNested(ctx, wt, fields0([]byte(lists["nested-repos"])), obj["nested"]); err != nil {
			return err
		}
		grove.Failpoint("restore.after-nested")
		if err := restoreOpState(ctx, wt, branch, obj["gitdir"], lists["op-refs"], head, m["orig-branch"], m["orig-tip"], detach); err != nil {
			return err
		}
		grove.Failpoint("restore.after-opstate")
		return restoreLock(wt, lists["lock"]) // last: until then it can be undone
	}
	if err := r.createWorktree(ctx, path, branch, head, fill); err != nil {
		return nil, fmt.Errorf("restore %s: %w", ref, err)
	}
	return restoreNotes(m, branch, detach), nil
}

// restoreNotes says what a restore from a snapshot with metadata m on
// branch brought back differently, and what the snapshot left out.
func restoreNotes(m map[string]string, branch string, detach bool) []string {
	var notes []string
	if ops := m["operations"]; ops != "" {
		notes = append(notes, ops+" in progress: restored")
	}
	symref, ok := m["symref"]
	switch {
	case detach && m["orig-branch"] != "":
		notes = append(notes, fmt.Sprintf("HEAD is detached at %s as it was; branch %s stands for %s (at %s), the branch the operation returns to", shortSHA(m["head"]), branch, m["orig-branch"], shortSHA(m["orig-tip"])))
	case detach:
		notes = append(notes, fmt.Sprintf("HEAD is detached at %s as it was", shortSHA(m["head"])))
	case ok && symref == "":
		notes = append(notes, fmt.Sprintf("HEAD was detached at %s: it is on branch %s now", shortSHA(m["head"]), branch))
	case ok && symref != "refs/heads/"+branch:
		notes = append(notes, fmt.Sprintf("%s is restored as branch %s", strings.TrimPrefix(symref, "refs/heads/"), branch))
	}
	switch {
	case m["drop-ignored"] == "true":
		notes = append(notes, "ignored files were not in the snapshot (dropped explicitly)")
	case m["ignored"] != "true":
		notes = append(notes, "reproducible ignored files (node_modules/, target/, ...: the keep list) were not in the snapshot: regenerate them")
	}
	return append(notes, "not in any snapshot: empty directories outside nested repositories, intent-to-add marks, submodule working trees (their commits are)")
}

// worktreeRefs lists the refs/worktree/* of the worktree at wt as
// "<sha> <ref>" lines, and the commits they point at. A ref pointing at
// anything but a commit is an error: a snapshot could not keep it.
func worktreeRefs(ctx context.Context, wt string) (text string, commits []string, err error) {
	out, err := run(ctx, wt, "for-each-ref", "--format=%(objectname) %(objecttype) %(refname)", "refs/worktree/")
	if err != nil {
		return "", nil, err
	}
	var b strings.Builder
	for _, l := range lines(out) {
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 {
			return "", nil, fmt.Errorf("unexpected for-each-ref line %q", l)
		}
		if f[1] != "commit" {
			return "", nil, fmt.Errorf("%s points at a %s, which a snapshot cannot keep; delete it or point it at a commit", f[2], f[1])
		}
		fmt.Fprintf(&b, "%s %s\n", f[0], f[2])
		commits = append(commits, f[0])
	}
	return b.String(), commits, nil
}

// withoutLock is the snapshot tree tree without its "lock" entry.
func withoutLock(ctx context.Context, dir, tree string) (string, error) {
	out, err := run(ctx, dir, "ls-tree", "-z", tree)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, e := range fields0(out) {
		if !strings.HasSuffix(e, "\tlock") {
			b.WriteString(e + "\x00")
		}
	}
	out, err = runGit(ctx, dir, nil, strings.NewReader(b.String()), "mktree", "-z")
	return trim(out), err
}

// knownSnapshot reports whether meta (a grove-snapshot blob) is in a
// format Restore reads.
func knownSnapshot(meta string) bool {
	return slices.ContainsFunc(snapshotVersions, func(v string) bool { return strings.HasPrefix(meta, v+"\n") })
}

// snapshotOptionsOf are the options a snapshot with metadata m was taken
// with (the size limit aside).
func snapshotOptionsOf(m map[string]string) SnapshotOptions {
	opt := SnapshotOptions{IncludeIgnored: m["ignored"] == "true", DropIgnored: m["drop-ignored"] == "true", MaxBytes: -1}
	if k, ok := m["keep"]; ok {
		opt.KeepIgnored = []string{}
		if k != "" {
			opt.KeepIgnored = strings.Split(k, "\t")
		}
	}
	return opt
}

// snapshotMeta reads the "key value" lines of a grove-snapshot blob.
func snapshotMeta(meta string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(meta, "\n")[1:] {
		if k, v, ok := strings.Cut(l, " "); ok {
			m[k] = v
		}
	}
	return m
}

// SnapshotsPrefix is where grove keeps snapshots.
const SnapshotsPrefix = "refs/grove/snapshots/"

// SnapshotCovers returns a ref under refs/grove/snapshots/ whose snapshot
// records the worktree at wtPath exactly as it is now (files, index and
// flags, HEAD, refs/worktree/*), or "" when none does. It builds a fresh
// snapshot tree to compare (writing objects, like Snapshot) but changes no
// ref and does not touch the worktree.
func (r *Repo) SnapshotCovers(ctx context.Context, wtPath string) (string, error) {
	wt, err := absPath(wtPath)
	if err != nil {
		return "", fmt.Errorf("check snapshots of %s: %w", wtPath, err)
	}
	out, err := run(ctx, r.Root, "for-each-ref", "--format=%(refname)%00%(tree)%00%(subject)", SnapshotsPrefix)
	if err != nil {
		return "", fmt.Errorf("check snapshots of %s: %w", wt, err)
	}
	fresh := map[string]string{} // options -> tree
	for _, l := range lines(out) {
		f := strings.Split(l, "\x00")
		if len(f) != 3 || f[2] != "grove snapshot of "+wt {
			continue
		}
		meta, err := run(ctx, r.Root, "cat-file", "blob", f[1]+":grove-snapshot")
		if err != nil || !knownSnapshot(string(meta)) {
			continue // not one of ours
		}
		opt := snapshotOptionsOf(snapshotMeta(string(meta)))
		key := fmt.Sprintf("%#v", opt)
		tree, ok := fresh[key]
		if !ok {
			st, err := r.snapshotTree(ctx, wt, opt)
			if err != nil {
				return "", fmt.Errorf("check snapshots of %s: %w", wt, err)
			}
			tree, fresh[key] = st.tree, st.tree
		}
		if tree == f[1] {
			return f[0], nil
		}
		// A lock taken (or its reason changed) since is no work.
		a, err := withoutLock(ctx, r.Root, tree)
		if err != nil {
			return "", fmt.Errorf("check snapshots of %s: %w", wt, err)
		}
		b, err := withoutLock(ctx, r.Root, f[1])
		if err != nil {
			return "", fmt.Errorf("check snapshots of %s: %w", wt, err)
		}
		if a == b {
			return f[0], nil
		}
	}
	return "", nil
}
