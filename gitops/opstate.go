package gitops

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// opStateFiles are the entries of a worktree's git dir that make up an
// operation in progress (merge, cherry-pick, revert, rebase, am, bisect,
// a sequence), its messages and its own config: a snapshot records them
// (under "gitdir") and Restore puts them back. The lock ("locked") is
// recorded apart (the "lock" blob), as SnapshotCovers does not compare it.
var opStateFiles = []string{
	"MERGE_HEAD", "MERGE_MSG", "MERGE_MODE", "MERGE_RR", "MERGE_AUTOSTASH", "AUTO_MERGE",
	"CHERRY_PICK_HEAD", "REVERT_HEAD", "ORIG_HEAD", "SQUASH_MSG", "rebase-merge", "rebase-apply",
	"sequencer", "BISECT_LOG", "BISECT_START", "BISECT_TERMS", "BISECT_NAMES", "BISECT_EXPECTED_REV",
	"BISECT_ANCESTORS_OK", "BISECT_FIRST_PARENT", "BISECT_RUN", "config.worktree",
}

// opStateRefs are the per-worktree ref namespaces an operation keeps
// (besides refs/worktree/, recorded on its own).
var opStateRefs = []string{"refs/bisect/", "refs/rewritten/"}

var shaRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\b[0-9a-f]{40}\b`) })

// opState is what a snapshot records of a worktree's operation state.
type opState struct {
	tree    string   // the opStateFiles present, captured raw ("" if none)
	refs    string   // "<sha> <ref>" lines of opStateRefs
	commits []string // every commit these name, to keep reachable
	names   []string // the operations in progress, as the gate names them
}

// captureOpState records the operation state of the worktree whose git
// dir is gitDir; git runs in dir with the global options pre. Every
// 40-hex commit id the files name (MERGE_HEAD, ORIG_HEAD, rebase todo
// lists, bisect logs...) and every commit the refs point at is listed so
// the snapshot keeps it reachable.
func captureOpState(ctx context.Context, dir string, pre []string, gitDir, tmp string) (opState, error) {
	var st opState
	stage := filepath.Join(tmp, "opstate")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return st, err
	}
	var text strings.Builder
	any := false
	for _, name := range opStateFiles {
		src := filepath.Join(gitDir, name)
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return st, fmt.Errorf("read %s: %w", src, err)
		}
		any = true
		if err := copyAll(src, filepath.Join(stage, name), &text); err != nil {
			return st, fmt.Errorf("record %s: %w", src, err)
		}
	}
	st.names = opNames(gitDir)
	if any {
		rt, err := captureRaw(ctx, dir, stage, tmp)
		if err != nil {
			return st, err
		}
		st.tree = rt.tree
	}
	args := append(slices.Clone(pre), "for-each-ref", "--format=%(objectname) %(objecttype) %(refname)")
	out, err := run(ctx, dir, append(args, opStateRefs...)...)
	if err != nil {
		return st, err
	}
	var refs strings.Builder
	for _, l := range lines(out) {
		f := strings.SplitN(l, " ", 3)
		if len(f) != 3 {
			return st, fmt.Errorf("unexpected for-each-ref line %q", l)
		}
		fmt.Fprintf(&refs, "%s %s\n", f[0], f[2])
		text.WriteString(f[0] + "\n")
	}
	st.refs = refs.String()
	st.commits, err = commitsNamed(ctx, dir, pre, shaRE().FindAllString(text.String(), -1))
	return st, err
}

// commitsNamed keeps the ids of cands that name commits in the repository.
func commitsNamed(ctx context.Context, dir string, pre, cands []string) ([]string, error) {
	slices.Sort(cands)
	cands = slices.Compact(cands)
	if len(cands) == 0 {
		return nil, nil
	}
	args := append(slices.Clone(pre), "cat-file", "--batch-check=%(objectname) %(objecttype)")
	out, err := runGit(ctx, dir, nil, strings.NewReader(strings.Join(cands, "\n")+"\n"), args...)
	if err != nil {
		return nil, err
	}
	var commits []string
	for _, l := range lines(out) {
		if sha, ok := strings.CutSuffix(l, " commit"); ok {
			commits = append(commits, sha)
		}
	}
	return commits, nil
}

// copyAll copies the file or directory src to dst (regular files and
// symlinks), appending regular files' text to text.
func copyAll(src, dst string, text *strings.Builder) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch t := d.Type(); {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case t&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		case t.IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			text.Write(b)
			text.WriteByte('\n')
			info, err := d.Info()
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, info.Mode().Perm())
		}
		return nil
	})
}

// opNames are the operations in progress in gitDir, as the gate names
// them.
func opNames(gitDir string) []string {
	rs := newRiskSet()
	checkGitDir(gitDir, rs)
	for _, r := range rs.risks() {
		if r.Reason == RiskOperation {
			return strings.Split(r.Detail, ", ")
		}
	}
	return nil
}

// origBranchOf names the branch an operation that detaches HEAD (rebase,
// bisect) returns to, read from its state in gitDir: the short name, or
// "".
func origBranchOf(gitDir string) string {
	for _, f := range []string{"rebase-merge/head-name", "rebase-apply/head-name"} {
		if b, err := os.ReadFile(filepath.Join(gitDir, f)); err == nil {
			if name, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "refs/heads/"); ok {
				return name
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(gitDir, "BISECT_START")); err == nil {
		name := strings.TrimSpace(string(b))
		if validRefName("refs/heads/"+name) && !shaRE().MatchString(name) {
			return name
		}
	}
	return ""
}

// restoreOpState puts a recorded operation state back into the new
// worktree wt on branch: the files into its git dir (a branch name in
// head-name or BISECT_START that was origBranch becomes branch), the
// refs. With detach, HEAD is detached at head and branch set to origTip
// (the tip of the branch the operation returns to).
func restoreOpState(ctx context.Context, wt, branch, tree, refs, head, origBranch, origTip string, detach bool) error {
	gd, err := GitDirOf(wt)
	if err != nil {
		return err
	}
	for _, l := range lines([]byte(refs)) {
		sha, name, ok := strings.Cut(l, " ")
		if !ok || !slices.ContainsFunc(opStateRefs, func(p string) bool { return strings.HasPrefix(name, p) }) || !validRefName(name) || checkRev(sha) != nil {
			return fmt.Errorf("bad operation ref line %q", l)
		}
		if _, err := runRetry(ctx, wt, "update-ref", "-m", "grove restore", "--end-of-options", name, sha); err != nil {
			return err
		}
	}
	if detach {
		if origTip != "" {
			if _, err := runRetry(ctx, wt, "update-ref", "-m", "grove restore", "refs/heads/"+branch, origTip); err != nil {
				return err
			}
		}
		// Worded as a checkout: git status reads "HEAD detached at" from it.
		if _, err := runRetry(ctx, wt, "update-ref", "--no-deref", "-m", "checkout: moving from "+branch+" to "+head, "HEAD", head); err != nil {
			return err
		}
	}
	if tree == "" {
		return nil
	}
	tmp, err := os.MkdirTemp("", "grove-opstate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	stage := filepath.Join(tmp, "s")
	if err := writeRaw(ctx, wt, stage, tree, nil); err != nil {
		return err
	}
	if origBranch != "" && origBranch != branch {
		for f, old := range map[string]string{
			"rebase-merge/head-name": "refs/heads/" + origBranch + "\n",
			"rebase-apply/head-name": "refs/heads/" + origBranch + "\n",
			"BISECT_START":           origBranch + "\n",
		} {
			p := filepath.Join(stage, f)
			if b, err := os.ReadFile(p); err == nil && string(b) == old {
				if err := os.WriteFile(p, []byte(strings.Replace(old, origBranch, branch, 1)), 0o644); err != nil {
					return err
				}
			}
		}
	}
	ents, err := os.ReadDir(stage)
	if err != nil {
		return err
	}
	for _, e := range ents {
		dst := filepath.Join(gd, e.Name())
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		if err := os.Rename(filepath.Join(stage, e.Name()), dst); err != nil {
			return err
		}
	}
	return nil
}

// restoreLock locks the worktree wt with reason (a snapshot's "lock"
// blob), as `git worktree lock --reason` does; "" leaves it unlocked.
func restoreLock(wt, reason string) error {
	if reason == "" {
		return nil
	}
	gd, err := GitDirOf(wt)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(gd, "locked"), []byte(reason), 0o644)
}
