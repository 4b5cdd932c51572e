package gitops

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/grove-dev/grove"
)

// RiskNested is a repository inside the worktree (untracked, ignored, in
// a reproducible directory: anywhere) that holds a commit, a ref, an index
// entry or a file: removing the worktree deletes it whole.
const RiskNested = "nested_repo"

// findNested returns the worktree-relative paths (slash-separated, sorted)
// of the nested repositories under the worktree at wt: directories holding
// a ".git" entry (a directory or a gitlink file). dirs are the
// worktree-relative directories (trailing "/" allowed) that git did not
// look into: untracked directories git shows collapsed (a nested
// repository is always one) and ignored directories. Only those are
// walked; git already looked at every other directory and would have
// shown a nested repository there as an untracked directory. The walk
// does not descend into a .git directory or follow symlinks; it does go
// on below a nested repository, so repositories nested deeper are listed
// too.
func findNested(wt string, dirs []string) ([]string, error) {
	var found []string
	var walk func(rel string) error
	walk = func(rel string) error {
		ents, err := os.ReadDir(filepath.Join(wt, filepath.FromSlash(rel)))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // gone since git listed it
			}
			return err
		}
		for _, e := range ents {
			if e.Name() == ".git" {
				found = append(found, rel)
				break
			}
		}
		for _, e := range ents {
			if e.IsDir() && e.Name() != ".git" {
				if err := walk(rel + "/" + e.Name()); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, d := range dirs {
		d = strings.TrimSuffix(d, "/")
		if d == "" || d == "." {
			continue
		}
		if fi, err := os.Lstat(filepath.Join(wt, filepath.FromSlash(d))); err != nil || !fi.IsDir() {
			continue // a file, a symlink, or gone
		}
		if err := walk(d); err != nil {
			return nil, fmt.Errorf("look for nested repositories: %w", err)
		}
	}
	sort.Strings(found)
	return slices.Compact(found), nil
}

// topNested keeps the paths of found that are not inside another one.
func topNested(found []string) []string {
	var top []string
	for _, p := range found {
		if !slices.ContainsFunc(top, func(t string) bool { return strings.HasPrefix(p, t+"/") }) {
			top = append(top, p)
		}
	}
	return top
}

// nestedAtRisk says why the nested repository at dir holds work, or ""
// when it holds nothing at all (no ref, no index entry, no file besides
// .git: a bare `git init`). A repository git cannot read is at risk.
func nestedAtRisk(ctx context.Context, dir string) string {
	out, err := run(ctx, dir, "for-each-ref", "--count=1", "--format=%(refname)")
	if err != nil {
		return "cannot read it: " + errorLine(stderrOf(err)+err.Error())
	}
	if ref := trim(out); ref != "" {
		return "has commits (" + ref + ")"
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "cannot read it: " + err.Error()
	}
	for _, e := range ents {
		if e.Name() != ".git" {
			return "has files"
		}
	}
	out, err = run(ctx, dir, "ls-files", "--stage")
	if err != nil {
		return "cannot read its index: " + errorLine(stderrOf(err)+err.Error())
	}
	if len(out) > 0 {
		return "has staged files"
	}
	return ""
}

// checkNested adds a RiskNested for every nested repository under the
// worktree at wt (found below dirs, see findNested) that holds work.
func checkNested(ctx context.Context, wt string, dirs []string, rs *riskSet) {
	found, err := findNested(wt, dirs)
	if err != nil {
		rs.add(RiskNested, err.Error())
		return
	}
	for _, p := range found {
		if why := nestedAtRisk(ctx, filepath.Join(wt, filepath.FromSlash(p))); why != "" {
			rs.addPath(RiskNested, p+" ("+why+")")
		}
	}
}

// Raw directory capture: a directory stored as a git tree file by file,
// .git entries included. git refuses a path component named ".git" in a
// tree, so it is stored under dotGitName (and a real entry of that name
// cannot be captured).
const dotGitName = ".grove-dotgit"

// rawTree is a directory captured verbatim.
type rawTree struct {
	tree      string   // every regular file and symlink, .git renamed
	emptyDirs []string // escaped relative paths of empty directories
}

// captureRaw writes every regular file and symlink under abs (a
// directory) as blobs of the repository at gitDir's worktree wt and
// returns them as a tree, with the empty directories listed apart. Sockets
// and FIFOs (no content) are skipped. It fails naming a path it cannot
// store.
func captureRaw(ctx context.Context, wt, abs string, tmp string) (rawTree, error) {
	var rt rawTree
	type file struct{ path, mode, abs string }
	var files, links []file
	err := filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(abs, p)
		if err != nil {
			return err
		}
		if rel == "." {
			rel = ""
		}
		esc, err := escapeRaw(filepath.ToSlash(rel))
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		switch t := d.Type(); {
		case d.IsDir():
			ents, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			if len(ents) == 0 && esc != "" {
				rt.emptyDirs = append(rt.emptyDirs, esc)
			}
		case t&fs.ModeSymlink != 0:
			links = append(links, file{esc, "120000", p})
		case t.IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			mode := "100644"
			if info.Mode().Perm()&0o100 != 0 {
				mode = "100755"
			}
			if strings.ContainsAny(p, "\n") {
				return fmt.Errorf("%q: a file name with a newline cannot be captured", p)
			}
			files = append(files, file{esc, mode, p})
		case t&(fs.ModeSocket|fs.ModeNamedPipe) != 0:
			// no content to keep
		default:
			return fmt.Errorf("%s: a %v cannot be captured", p, t)
		}
		return nil
	})
	if err != nil {
		return rt, err
	}
	var info strings.Builder
	if len(files) > 0 {
		var in strings.Builder
		for _, f := range files {
			in.WriteString(f.abs + "\n")
		}
		out, err := runGit(ctx, wt, nil, strings.NewReader(in.String()), "hash-object", "-w", "--no-filters", "--stdin-paths")
		if err != nil {
			return rt, err
		}
		ids := lines(out)
		if len(ids) != len(files) {
			return rt, fmt.Errorf("hash-object gave %d ids for %d files", len(ids), len(files))
		}
		for i, f := range files {
			fmt.Fprintf(&info, "%s %s\t%s\x00", f.mode, ids[i], f.path)
		}
	}
	for _, l := range links {
		target, err := os.Readlink(l.abs)
		if err != nil {
			return rt, err
		}
		out, err := runGit(ctx, wt, nil, strings.NewReader(target), "hash-object", "-w", "-t", "blob", "--no-filters", "--stdin")
		if err != nil {
			return rt, err
		}
		fmt.Fprintf(&info, "%s %s\t%s\x00", l.mode, trim(out), l.path)
	}
	idx, err := os.CreateTemp(tmp, "raw-index-")
	if err != nil {
		return rt, err
	}
	idx.Close()
	os.Remove(idx.Name()) // git wants to create it
	defer os.Remove(idx.Name())
	env := []string{"GIT_INDEX_FILE=" + idx.Name()}
	if _, err := runGit(ctx, wt, env, strings.NewReader(info.String()), "update-index", "-z", "--add", "--index-info"); err != nil {
		return rt, err
	}
	out, err := runGit(ctx, wt, env, nil, "write-tree")
	if err != nil {
		return rt, err
	}
	rt.tree = trim(out)
	return rt, nil
}

// escapeRaw renames every ".git" component of rel to dotGitName.
func escapeRaw(rel string) (string, error) {
	if rel == "" {
		return "", nil
	}
	comps := strings.Split(rel, "/")
	for i, c := range comps {
		switch {
		case c == dotGitName:
			return "", fmt.Errorf("a file named %s cannot be captured", dotGitName)
		case c == ".git":
			comps[i] = dotGitName
		}
	}
	return strings.Join(comps, "/"), nil
}

// writeRaw lays the captured directory rt (tree, empty-dir list) out at
// dest (made if missing; what is there is replaced), renaming dotGitName
// back to .git. git runs in wt, whose object store holds the tree.
func writeRaw(ctx context.Context, wt, dest, tree string, emptyDirs []string) error {
	if err := os.RemoveAll(dest); err != nil {
		return err
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "grove-raw-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	env := []string{"GIT_INDEX_FILE=" + filepath.Join(tmp, "index")}
	if _, err := runGit(ctx, wt, env, nil, "read-tree", tree); err != nil {
		return err
	}
	if _, err := runGit(ctx, wt, env, nil, "checkout-index", "-a", "-f", "--prefix="+dest+"/"); err != nil {
		return err
	}
	for _, d := range emptyDirs {
		if err := os.MkdirAll(filepath.Join(dest, filepath.FromSlash(d)), 0o755); err != nil {
			return err
		}
	}
	// Rename deepest first, so outer renames do not move inner paths away.
	var renames []string
	err = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == dotGitName {
			renames = append(renames, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(renames) - 1; i >= 0; i-- {
		p := renames[i]
		if err := os.Rename(p, filepath.Join(filepath.Dir(p), ".git")); err != nil {
			return err
		}
	}
	return nil
}

// dirSize is the total size of the regular files under abs (abs itself if
// it is a file), symlinks not followed.
func dirSize(abs string) (int64, error) {
	var n int64
	err := filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

// captureNested records the nested repositories at the worktree-relative
// paths nested (none inside another) under wt as a tree: entry "<i>" for
// nested[i] is a tree holding "files" (the directory captured raw, .git
// included) and, if any, "empty-dirs" (NUL-separated escaped paths). It
// returns "" for none.
func captureNested(ctx context.Context, wt string, nested []string, tmp string) (string, error) {
	if len(nested) == 0 {
		return "", nil
	}
	var top strings.Builder
	for i, p := range nested {
		rt, err := captureRaw(ctx, wt, filepath.Join(wt, filepath.FromSlash(p)), tmp)
		if err != nil {
			return "", fmt.Errorf("record nested repository %s: %w", p, err)
		}
		entry := fmt.Sprintf("040000 tree %s\tfiles\x00", rt.tree)
		if len(rt.emptyDirs) > 0 {
			out, err := runGit(ctx, wt, nil, strings.NewReader(join0(rt.emptyDirs)), "hash-object", "-w", "-t", "blob", "--no-filters", "--stdin")
			if err != nil {
				return "", err
			}
			entry += fmt.Sprintf("100644 blob %s\tempty-dirs\x00", trim(out))
		}
		out, err := runGit(ctx, wt, nil, strings.NewReader(entry), "mktree", "-z")
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&top, "040000 tree %s\t%d\x00", trim(out), i)
	}
	out, err := runGit(ctx, wt, nil, strings.NewReader(top.String()), "mktree", "-z")
	if err != nil {
		return "", err
	}
	return trim(out), nil
}

// restoreNested lays out, under the worktree wt, the nested repositories a
// snapshot recorded: paths (its nested-repos list) and tree (its "nested"
// tree), objects read through git in wt.
func restoreNested(ctx context.Context, wt string, paths []string, tree string) error {
	if len(paths) == 0 {
		return nil
	}
	if tree == "" {
		return fmt.Errorf("snapshot lists nested repositories but has no nested tree")
	}
	for i, p := range paths {
		if !validNestedPath(p) {
			return fmt.Errorf("bad nested repository path %q", p)
		}
		files, err := run(ctx, wt, "rev-parse", "--verify", "--quiet", fmt.Sprintf("%s:%d/files", tree, i))
		if err != nil {
			return fmt.Errorf("nested repository %s: %w", p, err)
		}
		var empty []string
		if out, err := run(ctx, wt, "cat-file", "blob", fmt.Sprintf("%s:%d/empty-dirs", tree, i)); err == nil {
			empty = fields0(out)
		}
		for _, d := range empty {
			if !validNestedPath(d) {
				return fmt.Errorf("bad empty directory %q", d)
			}
		}
		if err := writeRaw(ctx, wt, filepath.Join(wt, filepath.FromSlash(p)), trim(files), empty); err != nil {
			return fmt.Errorf("nested repository %s: %w", p, err)
		}
		if err := readOnlyObjects(filepath.Join(wt, filepath.FromSlash(p), ".git", "objects")); err != nil {
			return fmt.Errorf("nested repository %s: %w", p, err)
		}
	}
	return nil
}

// validNestedPath reports whether p is a clean relative slash path that
// stays inside the directory it is joined to.
func validNestedPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") {
		return false
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." || c == ".git" {
			return false
		}
	}
	return true
}

// checkSnapshotSize refuses a snapshot whose ignored paths (risky) and
// nested repositories, worktree-relative under wt, hold more than max
// bytes (0: DefaultSnapshotMaxBytes; < 0: no limit).
func checkSnapshotSize(wt string, risky, nested []string, max int64) error {
	if max < 0 {
		return nil
	}
	if max == 0 {
		max = DefaultSnapshotMaxBytes
	}
	var total int64
	for _, p := range append(slices.Clone(risky), nested...) {
		n, err := dirSize(filepath.Join(wt, filepath.FromSlash(strings.TrimSuffix(p, "/"))))
		if err != nil {
			return err
		}
		total += n
	}
	if total <= max {
		return nil
	}
	return grove.Userf(grove.ErrAtRisk,
		"drop ignored files from the snapshot explicitly (SnapshotOptions.DropIgnored), keep more of them out as reproducible (KeepIgnored), or raise the limit (MaxBytes)",
		"not taken: its ignored files and nested repositories hold %s, over the %s limit", humanBytes(total), humanBytes(max))
}

// humanBytes is n in B, KiB, MiB or GiB.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
