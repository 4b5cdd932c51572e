package gitops

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/grove-dev/grove"
)

// ApplyResult is the outcome of Apply.
type ApplyResult struct {
	Commit    string   // the target's tip afterwards; "" when Conflicts is non-empty
	Conflicts []string // files that conflict; nothing was changed
}

// applyInputs resolves base and head to commits and the trees of base,
// head and old (a commit), in one git process when all resolve; on any
// failure it goes one by one, for an error that names the culprit.
//
// Commits named by full id and stored loose (a task's commits and recent
// tips usually are) are read without git.
func (r *Repo) applyInputs(ctx context.Context, base, head, old string) (baseC, headC, baseTree, headTree, oldTree string, err error) {
	if t, ok := looseCommitTrees(r.CommonDir, base, head, old); ok {
		return base, head, t[0], t[1], t[2], nil
	}
	// git 2.39's rev-parse knows --end-of-options only with --verify
	// (otherwise it echoes it); checkRev has refused a leading '-'.
	out, err := run(ctx, r.Root, "rev-parse", base+"^{commit}", head+"^{commit}", base+"^{tree}", head+"^{tree}", old+"^{tree}")
	if t := lines(out); err == nil && len(t) == 5 && allObjectIDs(t) {
		return t[0], t[1], t[2], t[3], t[4], nil
	}
	out, err = run(ctx, r.Root, "rev-parse", "--verify", "--end-of-options", base+"^{commit}")
	if err != nil {
		return "", "", "", "", "", fmt.Errorf("apply: resolve base %s: %w", base, err)
	}
	baseC = trim(out)
	out, err = run(ctx, r.Root, "rev-parse", "--verify", "--end-of-options", head+"^{commit}")
	if err != nil {
		return "", "", "", "", "", fmt.Errorf("apply: resolve head %s: %w", head, err)
	}
	headC = trim(out)
	// Full SHAs from here on.
	out, err = run(ctx, r.Root, "rev-parse", baseC+"^{tree}", headC+"^{tree}", old+"^{tree}")
	if err != nil {
		return "", "", "", "", "", fmt.Errorf("apply: %w", err)
	}
	t := lines(out)
	if len(t) != 3 || !allObjectIDs(t) {
		return "", "", "", "", "", fmt.Errorf("apply: unexpected rev-parse output %q", out)
	}
	return baseC, headC, t[0], t[1], t[2], nil
}

// allObjectIDs reports whether every line is a full hexadecimal object id.
func allObjectIDs(lines []string) bool {
	for _, l := range lines {
		if len(l) != 40 && len(l) != 64 {
			return false
		}
		for i := 0; i < len(l); i++ {
			if !(l[i] >= '0' && l[i] <= '9' || l[i] >= 'a' && l[i] <= 'f') {
				return false
			}
		}
	}
	return true
}

// Apply lands head's changes relative to base on targetBranch (short
// name) as ONE new commit with message msg, without touching unrelated
// work in the repository.
//
// The three-way merge (base, target tip, head) runs in memory
// (`merge-tree --write-tree`; git 2.39 has no --merge-base, so when base is
// not the merge base of target and head the merge runs on throwaway
// commits whose history makes it so). Conflicts are not an error: the
// result lists the files and nothing changed.
//
// On success the tree is committed onto the target tip (`commit-tree`). If
// targetBranch is checked out in a worktree (normally the main one), its
// index and files are moved from the old to the new tip with
// `read-tree -m -u` — all or nothing, keeping unrelated dirty files; if
// the change would overwrite local changes or untracked files it returns a
// *grove.UserError wrapping grove.ErrConflict and nothing is changed.
// Finally the branch moves with a compare-and-swap `update-ref`; if that
// fails the checkout is moved back. All of it runs under the repository
// lock.
//
// If head adds nothing (same tree as base, or its changes are already on
// the target) the result is the current tip and no commit is made. A
// missing target branch is a *grove.UserError wrapping grove.ErrNotFound.
func (r *Repo) Apply(ctx context.Context, targetBranch, base, head, msg string) (ApplyResult, error) {
	ref := "refs/heads/" + targetBranch
	if !validRefName(ref) {
		return ApplyResult{}, grove.Userf(grove.ErrUsage, "", "invalid branch name: %q", targetBranch)
	}
	if err := checkRev(base); err != nil {
		return ApplyResult{}, fmt.Errorf("apply: %w", err)
	}
	if err := checkRev(head); err != nil {
		return ApplyResult{}, fmt.Errorf("apply: %w", err)
	}
	if strings.TrimSpace(msg) == "" {
		msg = "grove apply"
	}
	unlock, err := r.Lock(ctx)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply to %s: %w", targetBranch, err)
	}
	defer unlock()

	old, err := r.RefCommit(ctx, ref)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply to %s: %w", targetBranch, err)
	}
	if old == "" {
		return ApplyResult{}, grove.Userf(grove.ErrNotFound, "create it, or pick another target branch", "unknown target branch: %s", targetBranch)
	}
	baseC, headC, baseTree, headTree, oldTree, err := r.applyInputs(ctx, base, head, old)
	if err != nil {
		return ApplyResult{}, err
	}
	if baseC == headC || headTree == baseTree {
		return ApplyResult{Commit: old}, nil
	}

	tree := headTree // target unchanged since base: head's tree is the result
	if oldTree != baseTree {
		var conflicts []string
		tree, conflicts, err = r.merge(ctx, baseC, old, headC, baseTree, oldTree, headTree)
		if err != nil {
			return ApplyResult{}, fmt.Errorf("apply to %s: %w", targetBranch, err)
		}
		if len(conflicts) > 0 {
			return ApplyResult{Conflicts: conflicts}, nil
		}
	}
	grove.Failpoint("apply.after-merge-tree")
	if tree == oldTree {
		return ApplyResult{Commit: old}, nil
	}

	id, err := identityArgs(ctx, r.Root)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply to %s: %w", targetBranch, err)
	}
	out, err := run(ctx, r.Root, append(id, "commit-tree", "--no-gpg-sign", "-p", old, "-m", msg, tree)...)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply to %s: %w", targetBranch, err)
	}
	newC := trim(out)
	grove.Failpoint("apply.after-commit")

	// Move the checkout that has the target, if any, before the ref.
	wts, err := r.Worktrees(ctx)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply to %s: %w", targetBranch, err)
	}
	moved := ""
	for _, w := range wts {
		if w.Bare || w.Branch != targetBranch || w.Prunable || !exists(w.Path) {
			continue
		}
		if err := r.moveCheckout(ctx, w.Path, old, newC); err != nil {
			return ApplyResult{}, err
		}
		moved = w.Path
		break
	}
	grove.Failpoint("apply.after-checkout")
	// One reflog message for every apply, so that the daemon's kept
	// update-ref process serves them all (refupdate.go); the commit says
	// which task it is.
	err = retry(ctx, func() error { return updateRefs(ctx, r.CommonDir, "grove apply", "update "+ref+" "+newC+" "+old) })
	if err != nil {
		err = fmt.Errorf("apply to %s: move branch: %w", targetBranch, err)
		if moved != "" {
			uctx := context.WithoutCancel(ctx)
			if _, uerr := runRetry(uctx, moved, "read-tree", "-m", "-u", newC, old); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo checkout of %s: %w", moved, uerr))
			}
		}
		return ApplyResult{}, err
	}
	grove.Failpoint("apply.after-ref-move")
	return ApplyResult{Commit: newC}, nil
}

// merge runs the in-memory three-way merge of base, ours and theirs and
// returns the merged tree or the conflicting files.
func (r *Repo) merge(ctx context.Context, base, ours, theirs, baseTree, oursTree, theirsTree string) (string, []string, error) {
	isBase := r.soleMergeBase(base, ours, theirs)
	if !isBase {
		out, err := run(ctx, r.Root, "merge-base", "--all", "--end-of-options", ours, theirs)
		if err != nil && exitCode(err) != 1 {
			return "", nil, err
		}
		mb := lines(out)
		isBase = len(mb) == 1 && mb[0] == base
	}
	if !isBase {
		// Make base the merge base: two children of a root commit holding
		// base's tree. These commits stay unreferenced; gc drops them.
		id, err := identityArgs(ctx, r.Root)
		if err != nil {
			return "", nil, err
		}
		mk := func(tree string, parents ...string) (string, error) {
			args := append(id, "commit-tree", "--no-gpg-sign", "-m", "grove merge base")
			for _, p := range parents {
				args = append(args, "-p", p)
			}
			out, err := run(ctx, r.Root, append(args, tree)...)
			return trim(out), err
		}
		b, err := mk(baseTree)
		if err != nil {
			return "", nil, err
		}
		if ours, err = mk(oursTree, b); err != nil {
			return "", nil, err
		}
		if theirs, err = mk(theirsTree, b); err != nil {
			return "", nil, err
		}
	}
	out, err := run(ctx, r.Root, "merge-tree", "--write-tree", "-z", "--name-only", "--messages", "--end-of-options", ours, theirs)
	if err != nil && exitCode(err) != 1 {
		return "", nil, err
	}
	f := strings.Split(string(out), "\x00")
	if err == nil {
		return f[0], nil, nil
	}
	// Exit 1: "<tree>\0<file>\0...\0\0<messages>".
	var files []string
	for _, name := range f[1:] {
		if name == "" {
			break
		}
		files = append(files, name)
	}
	if len(files) == 0 {
		files = []string{"(unknown)"}
	}
	return "", files, nil
}

// soleMergeBase reports whether base is the one merge base of ours and
// theirs, from loose commit objects alone: every path back from ours and
// from theirs reaches base (within a few hundred commits, all loose), and
// no commit above base is on both sides. Then the common ancestors are
// base and its own ancestors, so `merge-base --all` says base. false means
// "ask git" (packed history, a root reached, a merge of the two, too long).
func (r *Repo) soleMergeBase(base, ours, theirs string) bool {
	above := func(tip string) (map[string]bool, bool) {
		seen := map[string]bool{}
		todo := []string{tip}
		for len(todo) > 0 {
			c := todo[len(todo)-1]
			todo = todo[:len(todo)-1]
			if c == base || seen[c] {
				continue
			}
			if len(seen) >= 256 {
				return nil, false
			}
			parents := looseCommitParents(r.CommonDir, c)
			if len(parents) == 0 { // not loose, or a root: not above base
				return nil, false
			}
			seen[c] = true
			todo = append(todo, parents...)
		}
		return seen, true
	}
	o, ok := above(ours)
	if !ok {
		return false
	}
	t, ok := above(theirs)
	if !ok {
		return false
	}
	for c := range t {
		if o[c] {
			return false
		}
	}
	return true
}

var clashRe = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`'(.+)' (?:not uptodate|would be overwritten|would be removed|would be lost)`)
})

// moveCheckout updates the index and files of the worktree at dir from
// commit old to commit newC (two-tree read-tree merge), refusing with a
// *grove.UserError (ErrConflict) when that would overwrite local work.
//
// read-tree is all or nothing: a refusal changes nothing. Stale stat data
// makes it mistake a touched file for a modified one, so a refusal is
// tried once more after `update-index --refresh` (only then: a fresh index,
// the common case, needs no refresh process).
func (r *Repo) moveCheckout(ctx context.Context, dir, old, newC string) error {
	_, err := runRetry(ctx, dir, "read-tree", "-m", "-u", "--end-of-options", old, newC)
	if err == nil {
		return nil
	}
	if _, rerr := runRetry(ctx, dir, "update-index", "-q", "--refresh"); rerr != nil && exitCode(rerr) != 1 {
		return fmt.Errorf("refresh index of %s: %w", dir, rerr)
	}
	_, err = runRetry(ctx, dir, "read-tree", "-m", "-u", "--end-of-options", old, newC)
	if err == nil {
		return nil
	}
	where := "main checkout"
	if !samePath(dir, r.Root) {
		where = "checkout at " + dir
	}
	s := stderrOf(err)
	if strings.Contains(s, "resolve your current index") || strings.Contains(s, "needs merge") {
		return grove.Userf(grove.ErrConflict, "finish or abort the merge there, then grove apply again", "%s has an unfinished merge", where)
	}
	var files []string
	for _, l := range lines([]byte(s)) {
		if m := clashRe().FindStringSubmatch(l); m != nil {
			files = append(files, m[1])
		}
	}
	if len(files) == 0 {
		return fmt.Errorf("update %s: %w", where, err)
	}
	list := strings.Join(files[:min(3, len(files))], ", ")
	if len(files) > 3 {
		list += fmt.Sprintf(" (and %d more)", len(files)-3)
	}
	return grove.Userf(grove.ErrConflict, "commit or stash them, then grove apply again", "%s has local changes to %s", where, list)
}
