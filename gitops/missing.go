package gitops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/grove-dev/grove"
)

// RiskMoved is a worktree whose directory is gone from its recorded path
// but found elsewhere: removing git's record would leave the moved files
// without their HEAD and index.
const RiskMoved = "moved"

// findMoved looks for the worktree whose administrative dir is gd among
// the siblings of its recorded path abs (where a worktree moved by hand
// usually lands): a directory whose .git file names gd. It returns its
// path or "".
func findMoved(abs, gd string) string {
	parent := filepath.Dir(abs)
	ents, err := os.ReadDir(parent)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(parent, e.Name())
		b, err := os.ReadFile(filepath.Join(p, ".git"))
		if err != nil {
			continue
		}
		if g, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir: "); ok && samePath(g, gd) {
			return p
		}
	}
	return ""
}

// repairHint is the hint for a worktree found moved to moved.
func repairHint(moved string) string {
	return "it was moved: run git worktree repair " + quoteArg(moved) + " and act on it there"
}

// checkAdmin runs the gate's checks that still apply to a worktree whose
// directory (abs) is gone, on what its administrative dir gd holds:
// a detached HEAD with commits no ref holds, commits only its HEAD reflog
// holds, an index that differs from HEAD (staged work), refs/worktree/*,
// operations in progress and a lock (held: commits counted as kept). A
// directory found moved is named in the missing risk.
func (r *Repo) checkAdmin(ctx context.Context, wg *sync.WaitGroup, abs, gd string, held []string, rs *riskSet) {
	if moved := findMoved(abs, gd); moved != "" {
		rs.add(RiskMoved, moved+": "+repairHint(moved))
	}
	pre := []string{"--git-dir=" + gd}
	out, err := run(ctx, gd, "--git-dir="+gd, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
	if err != nil {
		if exitCode(err) != 1 {
			rs.gitErr("read HEAD of missing worktree", err)
		}
		return // unborn: nothing committed, nothing staged against it
	}
	head := trim(out)
	wg.Go(func() {
		if _, err := run(ctx, gd, "--git-dir="+gd, "symbolic-ref", "--quiet", "HEAD"); err == nil {
			return
		} else if exitCode(err) != 1 {
			rs.gitErr("read HEAD of missing worktree", err)
			return
		}
		lost, err := r.unheldOf(ctx, []string{head}, held)
		switch {
		case err != nil:
			rs.gitErr("detached commits", err)
		case len(lost) > 0:
			rs.add(RiskDetached, fmt.Sprintf("%d commit(s) at %s on no branch", len(lost), head))
		}
	})
	wg.Go(func() { r.checkReflog(ctx, gd, pre, append([]string{head}, held...), rs) })
	wg.Go(func() {
		_, err := run(ctx, gd, "--git-dir="+gd, "diff-index", "--cached", "--quiet", head, "--")
		switch {
		case exitCode(err) == 1:
			rs.add(RiskStaged, "the index of the missing worktree differs from HEAD")
		case err != nil:
			rs.gitErr("index of missing worktree", err)
		}
	})
	wg.Go(func() {
		out, err := run(ctx, gd, "--git-dir="+gd, "for-each-ref", "--format=%(refname)", "refs/worktree/")
		if err != nil {
			rs.gitErr("worktree refs", err)
			return
		}
		for _, ref := range lines(out) {
			rs.addPath(RiskWorktreeRefs, ref)
		}
	})
	checkGitDir(gd, rs)
}

// snapshotMissing snapshots a worktree whose directory (wt) is gone from
// what git's administrative dir still holds: HEAD, its reflog's commits,
// the index (also as the files: the best record of them left), refs,
// operation state, the lock. A directory found moved is a refusal
// (*grove.UserError wrapping grove.ErrAtRisk) whose hint is `git worktree
// repair`: its files are there, and a snapshot without them would be
// less than what repair gives back.
func (r *Repo) snapshotMissing(ctx context.Context, wt string, opt SnapshotOptions) (snapshotState, error) {
	gd, err := r.adminDirOf(wt)
	if err != nil {
		return snapshotState{}, err
	}
	if gd == "" {
		return snapshotState{}, fmt.Errorf("%s is gone and git records no worktree there", wt)
	}
	if moved := findMoved(wt, gd); moved != "" {
		return snapshotState{}, grove.Userf(grove.ErrAtRisk, repairHint(moved),
			"worktree %s is gone from there but found at %s", wt, moved)
	}
	// A stand-in directory whose .git names the admin dir, holding the
	// index's files, lets the usual snapshot run; nothing is written to
	// the admin dir (the index is read through a copy).
	tmp, err := os.MkdirTemp("", "grove-missing-")
	if err != nil {
		return snapshotState{}, err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "wt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return snapshotState{}, err
	}
	if err := os.WriteFile(filepath.Join(dir, ".git"), []byte("gitdir: "+gd+"\n"), 0o644); err != nil {
		return snapshotState{}, err
	}
	idx := filepath.Join(tmp, "index")
	if err := copyFile(filepath.Join(gd, "index"), idx); err == nil {
		if _, err := runGit(ctx, dir, []string{"GIT_INDEX_FILE=" + idx}, nil, "checkout-index", "--all", "--force"); err != nil {
			return snapshotState{}, err
		}
	} else if !os.IsNotExist(err) {
		return snapshotState{}, err
	}
	return r.snapshotDir(ctx, dir, wt, opt, true)
}
