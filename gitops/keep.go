package gitops

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// RiskReflog is a commit only the worktree's own HEAD reflog holds (made
// on a detached HEAD, then left): removal deletes that reflog.
const RiskReflog = "reflog_commits"

// headReflog lists the commits the HEAD reflog of a worktree names, newest
// first, without repeats. git runs in dir with the global options pre
// (e.g. --git-dir=<admin dir> for a worktree whose directory is gone). An
// unborn HEAD without a reflog has none.
func headReflog(ctx context.Context, dir string, pre ...string) ([]string, error) {
	args := append(slices.Clone(pre), "reflog", "show", "--format=%H", "HEAD", "--")
	out, err := run(ctx, dir, args...)
	if err != nil {
		if strings.Contains(stderrOf(err), "unknown revision") {
			return nil, nil // unborn HEAD
		}
		return nil, err
	}
	var shas []string
	for _, l := range lines(out) {
		if !slices.Contains(shas, l) {
			shas = append(shas, l)
		}
	}
	return shas, nil
}

// unheldOf returns the commits of tips (missing objects skipped) that no
// ref outside refs/grove/* holds and that are not reachable from held.
func (r *Repo) unheldOf(ctx context.Context, tips, held []string) ([]string, error) {
	if len(tips) == 0 {
		return nil, nil
	}
	args := append([]string{"rev-list", "--ignore-missing", "--stdin", "--not", "--exclude=refs/grove/*", "--glob=refs/*"}, held...)
	out, err := runGit(ctx, r.Root, nil, strings.NewReader(strings.Join(tips, "\n")+"\n"), args...)
	if err != nil {
		return nil, err
	}
	return lines(out), nil
}

// checkReflog adds a RiskReflog when the HEAD reflog of the worktree
// (git run in dir with pre) names commits that no ref outside
// refs/grove/*, no commit of held and nothing they reach holds.
//
// In a worktree (pre empty) whose HEAD reflog file reads exactly and
// names only commits that held (or a loose held commit's parents) are,
// the answer needs no git: nothing is lost (see heldAtOnce).
func (r *Repo) checkReflog(ctx context.Context, dir string, pre []string, held []string, rs *riskSet) {
	if len(pre) == 0 {
		if gd, err := GitDirOf(dir); err == nil {
			if shas, ok := headReflogFile(gd); ok && r.heldAtOnce(shas, held) {
				return
			}
		}
	}
	shas, err := headReflog(ctx, dir, pre...)
	if err != nil {
		rs.gitErr("reflog", err)
		return
	}
	lost, err := r.unheldOf(ctx, shas, held)
	switch {
	case err != nil:
		rs.gitErr("reflog", err)
	case len(lost) > 0:
		rs.add(RiskReflog, fmt.Sprintf("%d commit(s) only the HEAD reflog holds, newest %s", len(lost), shortSHA(firstIn(shas, lost))))
	}
}

// firstIn is the first of order that is in set ("" if none).
func firstIn(order, set []string) string {
	for _, s := range order {
		if slices.Contains(set, s) {
			return s
		}
	}
	return ""
}

// keepParents returns the commits a snapshot must add as parents, after
// parents, so that every commit of extra stays reachable from it: those of
// extra that parents do not reach, reduced to the ones no other of them
// reaches. Missing objects are skipped.
func keepParents(ctx context.Context, dir string, parents, extra []string, pre ...string) ([]string, error) {
	var cand []string
	for _, c := range extra {
		if !slices.Contains(parents, c) && !slices.Contains(cand, c) {
			cand = append(cand, c)
		}
	}
	if len(cand) == 0 {
		return nil, nil
	}
	args := append(slices.Clone(pre), "rev-list", "--ignore-missing", "--stdin")
	if len(parents) > 0 {
		args = append(append(args, "--not"), parents...)
	}
	out, err := runGit(ctx, dir, nil, strings.NewReader(strings.Join(cand, "\n")+"\n"), args...)
	if err != nil {
		return nil, err
	}
	unreached := map[string]bool{}
	for _, c := range lines(out) {
		unreached[c] = true
	}
	cand = slices.DeleteFunc(cand, func(c string) bool { return !unreached[c] })
	if len(cand) <= 1 {
		return cand, nil
	}
	out, err = run(ctx, dir, append(append(slices.Clone(pre), "merge-base", "--independent"), cand...)...)
	if err != nil {
		return nil, err
	}
	indep := lines(out)
	// Keep cand's order (newest first) for a stable commit.
	return slices.DeleteFunc(cand, func(c string) bool { return !slices.Contains(indep, c) }), nil
}

// headReflogFile is headReflog read from gitDir/logs/HEAD (each line
// "<old> <new> <who> <when>\t<message>"; the new ids, newest first, no
// repeats); ok is false when a line does not read exactly.
func headReflogFile(gitDir string) (shas []string, ok bool) {
	b, err := os.ReadFile(filepath.Join(gitDir, "logs", "HEAD"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, true
	}
	if err != nil {
		return nil, false
	}
	text := strings.TrimSuffix(string(b), "\n")
	if text == "" {
		return nil, true
	}
	ls := strings.Split(text, "\n")
	for i := len(ls) - 1; i >= 0; i-- {
		f := strings.SplitN(ls[i], " ", 3)
		if len(f) != 3 {
			return nil, false
		}
		if _, ok := oneObjectID([]byte(f[0])); !ok {
			return nil, false
		}
		if _, ok := oneObjectID([]byte(f[1])); !ok || strings.Trim(f[1], "0") == "" {
			return nil, false
		}
		if !slices.Contains(shas, f[1]) {
			shas = append(shas, f[1])
		}
	}
	return shas, true
}

// heldAtOnce reports whether every commit of shas is plainly held: it is
// one of held (a commit id, or a branch or grove ref read from the ref
// files) or a parent of one of those, read from its loose object. false
// means "ask git", not "lost".
func (r *Repo) heldAtOnce(shas, held []string) bool {
	var ids []string
	for _, h := range held {
		if strings.HasPrefix(h, "refs/heads/") || strings.HasPrefix(h, "refs/grove/") {
			oid, known := filesRef(r.CommonDir, h)
			if !known {
				return false
			}
			h = oid
		}
		if _, ok := oneObjectID([]byte(h)); ok {
			ids = append(ids, h)
		}
	}
	var parents []string
	parentsRead := false
	for _, c := range shas {
		if slices.Contains(ids, c) {
			continue
		}
		if !parentsRead {
			parentsRead = true
			for _, id := range ids {
				parents = append(parents, looseCommitParents(r.CommonDir, id)...)
			}
		}
		if !slices.Contains(parents, c) {
			return false
		}
	}
	return true
}
