package gitops

// Removing a worktree's directory and git records: the low-level steps
// under Retire (trash_retire.go), which is grove's only removal path.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/grove-dev/grove"
)

// RemoveWorktree removes the worktree at path and deletes
// refs/heads/<branch> (compare-and-swap against its current value), both
// under the repository lock. branch may be "" to keep every branch.
//
// It is NOT a removal path: it deletes, with no trash copy. grove's
// removals go through Retire (or RetireWorktree), which calls it only as
// the fallback when the trash is on another filesystem than the worktree
// (the gate's answer alone) and for a path git does not record as a
// linked worktree.
//
// It tries plain `git worktree remove` first. When git refuses — modified
// or untracked files, a worktree lock, an initialised submodule — it
// removes with --force only when nothing is lost by it: the worktree is
// clean apart from clean submodules and not locked, or a snapshot under
// refs/grove/snapshots/ records its current state exactly (see
// SnapshotCovers; Snapshot first, then RemoveWorktree, is how a forced
// removal is done). A submodule with changes or new commits is never
// forced, since no snapshot holds them. A refusal is a *grove.UserError
// wrapping grove.ErrAtRisk, with the worktree untouched. Ignored files go
// with the worktree either way, as with plain git: the gate judges them.
//
// It is idempotent: a registered worktree whose directory is gone loses
// its record (that one only: other missing worktrees, such as a user's on
// a disk not mounted, keep theirs; a locked one is refused with
// ErrAtRisk), a path that is no worktree is left alone, and a missing
// branch is fine. It refuses to delete a branch checked out in another
// worktree (*grove.UserError, ErrConflict) and to remove the main
// worktree. It does NOT run the at-risk gate: callers run AtRisk first.
func (r *Repo) RemoveWorktree(ctx context.Context, path, branch string) error {
	path, err := absPath(path)
	if err != nil {
		return fmt.Errorf("remove worktree %s: %w", path, err)
	}
	if branch != "" && !validRefName("refs/heads/"+branch) {
		return grove.Userf(grove.ErrUsage, "", "invalid branch name: %q", branch)
	}
	refused, err := r.removeLocked(ctx, path, branch, 0, nil)
	if err != nil || refused == "" {
		return err
	}
	// Outside the lock (a snapshot-sized job): may we force it?
	force, err := r.forceLevel(ctx, path, refused)
	if err != nil {
		return err
	}
	refused, err = r.removeLocked(ctx, path, branch, force, nil)
	if err == nil && refused != "" {
		err = fmt.Errorf("remove worktree %s: git refused even with --force: %s", path, refused)
	}
	return err
}

// RetireWorktree is Retire for callers written before the trash kept
// entries: with a safe report it is Retire; with a report that is not
// safe it is Retire with Force when a snapshot under refs/grove/snapshots/
// records the worktree exactly as it is (Snapshot, then RetireWorktree, is
// how a forced removal was done), and RemoveWorktree otherwise (which
// refuses what it may not force); a missing directory is Retire's
// missing case. New code calls Retire.
func (r *Repo) RetireWorktree(ctx context.Context, path, branch, trashDir string, rep Report) error {
	abs, err := absPath(path)
	if err != nil {
		return fmt.Errorf("remove worktree %s: %w", path, err)
	}
	safe := rep.Safe && rep.Head != "" && samePath(rep.Path, abs) && (branch == "" || rep.Branch == branch)
	opt := RetireOptions{Manifest: TrashManifest{Reason: "remove"}}
	if !safe && !gone(abs) {
		covered, err := r.SnapshotCovers(ctx, abs)
		if err != nil || covered == "" {
			return r.RemoveWorktree(ctx, path, branch)
		}
		opt.Force = true
	}
	_, err = r.Retire(ctx, path, branch, trashDir, rep, opt)
	return err
}

// retireTarget resolves the worktree at abs for RetireWorktree: its real
// directory, the path git records for it (exactly as git worktree list
// shows it) and its administrative dir. ok is false when abs is not a
// linked worktree of r that git records at its real path.
func (r *Repo) retireTarget(abs string) (real, recorded, adminDir string, ok bool) {
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", "", "", false
	}
	if st, err := os.Stat(real); err != nil || !st.IsDir() {
		return "", "", "", false
	}
	gd, err := GitDirOf(real) // fails for the main worktree (.git is a directory)
	if err != nil || !samePath(filepath.Dir(gd), filepath.Join(r.CommonDir, "worktrees")) {
		return "", "", "", false
	}
	recorded, err = recordedPath(gd)
	if err != nil || !samePath(recorded, real) {
		return "", "", "", false
	}
	return real, recorded, gd, true
}

// recheckMoved runs the at-risk gate's checks of the worktree itself on
// the worktree just moved to dir (its .git file still names its git dir
// gitDir by absolute path, so git works there), with the options rep
// records, and checks that its HEAD and rep.Branch are where the gate saw
// them. Anything found is a *grove.UserError wrapping grove.ErrAtRisk; a
// check that cannot run is one too (fail closed).
func (r *Repo) recheckMoved(ctx context.Context, path, dir, gitDir string, rep Report) error {
	rs := newRiskSet()
	var changed []string
	// Processes first: the git commands below run inside dir themselves.
	if !rep.skipProcs {
		checkProcesses(dir, rs)
	}
	stashBranch := rep.Branch
	l, err := r.movedHead(ctx, dir, gitDir)
	switch {
	case err != nil:
		rs.gitErr("inspect moved worktree", err)
	case len(l) != 3:
		rs.gitErr("inspect moved worktree", fmt.Errorf("unexpected rev-parse output %q", l))
	case !samePath(l[0], gitDir):
		rs.gitErr("inspect moved worktree", fmt.Errorf("its git dir is %s, not %s", l[0], gitDir))
	default:
		if l[1] != rep.Head {
			changed = append(changed, fmt.Sprintf("HEAD moved from %s to %s", shortSHA(rep.Head), shortSHA(l[1])))
		}
		if b, ok := strings.CutPrefix(l[2], "refs/heads/"); ok && stashBranch == "" {
			stashBranch = b
		}
		var wg sync.WaitGroup
		r.checkTree(ctx, &wg, dir, gitDir, stashBranch, rep.keep, false, true, rs)
		wg.Wait()
	}
	if rep.Branch != "" {
		tip, err := r.RefCommit(ctx, "refs/heads/"+rep.Branch)
		switch {
		case err != nil:
			rs.gitErr("read branch", err)
		case tip != rep.BranchTip:
			changed = append(changed, fmt.Sprintf("branch %s moved from %s to %s", rep.Branch, shortSHA(rep.BranchTip), shortSHA(tip)))
		}
	}
	for _, risk := range rs.risks() {
		s := risk.Reason
		if risk.Detail != "" {
			s += " (" + risk.Detail + ")"
		}
		changed = append(changed, s)
	}
	if len(changed) == 0 {
		return nil
	}
	return grove.Userf(grove.ErrAtRisk, "run the removal again: the at-risk gate judges it as it is now",
		"worktree %s not removed: it changed after the at-risk gate judged it: %s", path, strings.Join(changed, "; "))
}

// movedHead returns, for the worktree moved to dir, what `rev-parse
// --path-format=absolute --git-dir HEAD --symbolic-full-name HEAD` prints
// there, one line each; read from the files when they answer exactly.
func (r *Repo) movedHead(ctx context.Context, dir, gitDir string) ([]string, error) {
	if info, known := r.worktreeInfoFiles(dir); known && samePath(info.gitDir, gitDir) {
		ref := "HEAD" // what --symbolic-full-name says of a detached HEAD
		if info.branch != "" {
			ref = "refs/heads/" + info.branch
		}
		return []string{info.gitDir, info.head, ref}, nil
	}
	out, err := run(ctx, dir, "rev-parse", "--path-format=absolute", "--git-dir", "HEAD", "--symbolic-full-name", "HEAD")
	return lines(out), err
}

// removeExpect is the state RetireWorktree requires of the worktree it
// removes: what the at-risk gate judged.
type removeExpect struct {
	head string // the worktree's HEAD commit
	tip  string // the branch's tip; "" if it did not exist
}

// removeLocked is the locked part of RemoveWorktree: `worktree remove`
// with force times -f (0, 1 or 2). When git refuses for a reason forcing
// would override, it returns that refusal (git's message) and nothing
// else was changed.
//
// With want (RetireWorktree: path is the recorded path of a worktree
// already moved away), the worktree must be registered with HEAD at
// want.head and the branch must point at want.tip, else it refuses
// (ErrAtRisk) before changing anything; the branch is then deleted with a
// compare-and-swap against want.tip rather than its current tip.
func (r *Repo) removeLocked(ctx context.Context, path, branch string, force int, want *removeExpect) (refused string, err error) {
	unlock, err := r.Lock(ctx)
	if err != nil {
		return "", fmt.Errorf("remove worktree %s: %w", path, err)
	}
	defer unlock()
	wts, err := r.Worktrees(ctx)
	if err != nil {
		return "", fmt.Errorf("remove worktree %s: %w", path, err)
	}
	var mine *WorktreeEntry
	for i := range wts {
		w := &wts[i]
		if samePath(w.Path, path) {
			mine = w
		} else if branch != "" && w.Branch == branch {
			return "", grove.Userf(grove.ErrConflict, "", "branch %s is checked out at %s", branch, w.Path)
		}
	}
	ref := "refs/heads/" + branch
	if want != nil {
		if mine == nil {
			return "", fmt.Errorf("remove worktree %s: git no longer records it as a worktree", path)
		}
		if mine.Head != want.head {
			return "", grove.Userf(grove.ErrAtRisk, "run the removal again: the at-risk gate judges it as it is now",
				"worktree %s not removed: its HEAD moved from %s to %s after the at-risk gate judged it", path, shortSHA(want.head), shortSHA(mine.Head))
		}
		if branch != "" {
			tip, err := r.RefCommit(ctx, ref)
			if err != nil {
				return "", fmt.Errorf("remove worktree %s: %w", path, err)
			}
			if tip != want.tip {
				return "", grove.Userf(grove.ErrAtRisk, "run the removal again: the at-risk gate judges it as it is now",
					"worktree %s not removed: branch %s moved from %s to %s after the at-risk gate judged it", path, branch, shortSHA(want.tip), shortSHA(tip))
			}
		}
	}
	if mine != nil {
		if mine == &wts[0] || samePath(mine.Path, r.Root) {
			return "", fmt.Errorf("remove worktree %s: refusing to remove the main worktree", path)
		}
		switch {
		case gone(mine.Path):
			if err := r.forgetWorktree(ctx, mine); err != nil {
				return "", fmt.Errorf("remove worktree %s: %w", path, err)
			}
		case want != nil:
			return "", fmt.Errorf("remove worktree %s: something is at its path again", path)
		default:
			args := []string{"worktree", "remove"}
			for range force {
				args = append(args, "--force")
			}
			if _, err := runRetry(ctx, r.Root, append(args, "--", mine.Path)...); err != nil {
				if why := forceable(err); why != "" {
					return why, nil
				}
				return "", fmt.Errorf("remove worktree %s: %w", path, err)
			}
		}
	}
	if branch == "" {
		return "", nil
	}
	var tip string
	if want != nil {
		tip = want.tip
	} else if tip, err = r.RefCommit(ctx, ref); err != nil {
		return "", err
	}
	if tip == "" {
		return "", nil
	}
	return "", r.deleteRef(ctx, ref, tip)
}

// forgetPath removes git's record of the worktree registered at path,
// whose directory is gone, if there is one. Called under the lock.
func (r *Repo) forgetPath(ctx context.Context, path string) error {
	wts, err := r.Worktrees(ctx)
	if err != nil {
		return err
	}
	for i := range wts {
		if i > 0 && samePath(wts[i].Path, path) {
			return r.forgetWorktree(ctx, &wts[i])
		}
	}
	return nil
}

// forgetWorktree removes git's record of the registered worktree w, whose
// directory is gone, and nothing else. `git worktree prune` would drop
// the record of every worktree whose directory is missing, a user's on a
// disk that is not mounted too, and with it that worktree's HEAD, index
// and detached commits. A locked worktree is refused (*grove.UserError,
// ErrAtRisk). Called under the repository lock.
//
// When nothing is at w.Path, `git worktree remove -- <path>` does it (on
// git 2.39, for a missing directory it deletes only that worktree's
// administrative dir, and it refuses a locked one); when something is
// there (a directory without its .git file) or git fails, exactly that
// administrative dir is deleted, found through its gitdir file. Nothing
// at w.Path is ever deleted.
func (r *Repo) forgetWorktree(ctx context.Context, w *WorktreeEntry) error {
	locked := func() error {
		return grove.Userf(grove.ErrAtRisk, "if it is gone for good: git worktree unlock "+quoteArg(w.Path),
			"worktree %s is locked: its record is kept though its directory is missing", w.Path)
	}
	if w.Locked {
		return locked()
	}
	var gitErr error
	if _, err := os.Lstat(w.Path); errors.Is(err, os.ErrNotExist) {
		_, err := runRetry(ctx, r.Root, "worktree", "remove", "--", w.Path)
		if err == nil {
			return nil
		}
		if forceable(err) == refusedLocked {
			return locked()
		}
		gitErr = err
	}
	gd, err := r.adminDirOf(w.Path)
	switch {
	case err != nil:
		return fmt.Errorf("forget worktree %s: %w", w.Path, errors.Join(gitErr, err))
	case gd == "" && gitErr != nil:
		return fmt.Errorf("forget worktree %s: %w", w.Path, gitErr)
	case gd == "":
		return nil // no record left
	case exists(filepath.Join(gd, "locked")):
		return locked()
	}
	if err := os.RemoveAll(gd); err != nil {
		return fmt.Errorf("forget worktree %s: %w", w.Path, err)
	}
	return nil
}

// Why `git worktree remove` refused, for the refusals --force overrides.
const (
	refusedChanges    = "changes"
	refusedLocked     = "locked"
	refusedSubmodules = "submodules"
)

func forceable(err error) string {
	s := stderrOf(err)
	switch {
	case strings.Contains(s, "locked working tree"):
		return refusedLocked
	case strings.Contains(s, "contains modified or untracked files"):
		return refusedChanges
	case strings.Contains(s, "containing submodules"):
		return refusedSubmodules
	}
	return ""
}

// forceLevel decides whether a worktree git refused to remove may be
// removed with --force (1) or --force --force (2, locked), or returns why
// not (*grove.UserError, ErrAtRisk).
func (r *Repo) forceLevel(ctx context.Context, path, refused string) (int, error) {
	force := 1
	gd, err := GitDirOf(path)
	if err != nil {
		return 0, fmt.Errorf("remove worktree %s: %w", path, err)
	}
	locked := exists(filepath.Join(gd, "locked"))
	if locked || refused == refusedLocked {
		force = 2
	}
	out, err := run(ctx, path, "--no-optional-locks", "status", "--porcelain=v2", "-z", "-uall", "--no-renames", "--ignore-submodules=none")
	if err != nil {
		return 0, fmt.Errorf("remove worktree %s: %w", path, err)
	}
	clean := true
	for _, e := range fields0(out) {
		if len(e) < 2 {
			continue
		}
		p := strings.SplitN(e, " ", 4)
		if (e[0] == '1' || e[0] == '2') && len(p) == 4 && strings.HasPrefix(p[2], "S") && p[2] != "S..." {
			return 0, grove.Userf(grove.ErrAtRisk, "commit and push its work, or remove it by hand",
				"worktree %s not removed: a submodule has changes or commits a snapshot cannot keep", path)
		}
		if e[0] != '#' {
			clean = false
		}
	}
	if clean && !locked {
		return force, nil // only clean submodules stood in the way
	}
	covered, err := r.SnapshotCovers(ctx, path)
	if err != nil {
		return 0, fmt.Errorf("remove worktree %s: %w", path, err)
	}
	if covered == "" {
		return 0, grove.Userf(grove.ErrAtRisk, "snapshot it first (grove close --force does)",
			"worktree %s not removed: it holds changes no snapshot records", path)
	}
	return force, nil
}
