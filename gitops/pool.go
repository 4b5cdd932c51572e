package gitops

import (
	"context"
	"fmt"
)

// RenameBranch renames refs/heads/<from> to refs/heads/<to> under the
// repository lock; a worktree that has <from> checked out follows it.
// Idempotent: if <from> is gone and <to> exists, it was done already.
func (r *Repo) RenameBranch(ctx context.Context, from, to string) error {
	for _, b := range []string{from, to} {
		if !validRefName("refs/heads/" + b) {
			return fmt.Errorf("rename branch: invalid name %q", b)
		}
	}
	unlock, err := r.Lock(ctx)
	if err != nil {
		return fmt.Errorf("rename branch %s: %w", from, err)
	}
	defer unlock()
	if handled, err := r.renameBranchFiles(ctx, from, to); handled {
		return err
	}
	_, err = runRetry(ctx, r.Root, "branch", "-m", "--", from, to)
	if err == nil {
		return nil
	}
	// Done already (a repeat after a crash)? Only then is it not an error.
	oldC, oerr := r.RefCommit(ctx, "refs/heads/"+from)
	newC, nerr := r.RefCommit(ctx, "refs/heads/"+to)
	if oerr == nil && nerr == nil && oldC == "" && newC != "" {
		return nil
	}
	return fmt.Errorf("rename branch %s to %s: %w", from, to, err)
}

// Advance moves a clean worktree on branch to commit `to` in place: only
// the files that differ from the branch's current commit are checked out
// (`read-tree -m -u`), then the branch moves with a compare-and-swap. It
// starts from where the branch really is (not where a caller last saw it),
// so a branch already at `to` is done, and a repeat after a crash between
// the checkout and the branch move completes the move. A worktree with
// local changes that the move would touch is refused and left as it was.
func (r *Repo) Advance(ctx context.Context, path, branch, to string) error {
	if err := checkRev(to); err != nil {
		return fmt.Errorf("advance: %w", err)
	}
	from, err := r.RefCommit(ctx, "refs/heads/"+branch)
	if err != nil {
		return fmt.Errorf("advance %s: %w", path, err)
	}
	if from == "" {
		return fmt.Errorf("advance %s: no branch %s", path, branch)
	}
	if from == to {
		return nil
	}
	if err := r.moveCheckout(ctx, path, from, to); err != nil {
		return fmt.Errorf("advance %s: %w", path, err)
	}
	if _, err := runRetry(ctx, path, "update-ref", "-m", "grove: advance", "--end-of-options", "refs/heads/"+branch, to, from); err != nil {
		uctx := context.WithoutCancel(ctx)
		if _, uerr := runRetry(uctx, path, "read-tree", "-m", "-u", to, from); uerr != nil {
			return fmt.Errorf("advance %s: move branch: %w (undo: %v)", path, err, uerr)
		}
		return fmt.Errorf("advance %s: move branch: %w", path, err)
	}
	return nil
}

// FinishAdvance completes an Advance that a crash cut between the checkout
// and the branch move: if the worktree's index and files are exactly
// commit `to` (nothing staged, modified or untracked against it), the
// branch is moved there and ok is true. Anything else is left untouched.
func (r *Repo) FinishAdvance(ctx context.Context, path, branch, to string) (ok bool, err error) {
	if err := checkRev(to); err != nil {
		return false, fmt.Errorf("finish advance: %w", err)
	}
	from, err := r.RefCommit(ctx, "refs/heads/"+branch)
	if err != nil || from == "" || from == to {
		return false, err
	}
	if _, err := run(ctx, path, "diff-index", "--cached", "--quiet", "--end-of-options", to, "--"); err != nil {
		return false, nil // the index is not `to` (or git failed: not ok either way)
	}
	if _, err := run(ctx, path, "diff-files", "--quiet"); err != nil {
		return false, nil
	}
	out, err := run(ctx, path, "ls-files", "-z", "--others", "--exclude-standard")
	if err != nil || len(out) > 0 {
		return false, err
	}
	if _, err := runRetry(ctx, path, "update-ref", "-m", "grove: advance", "--end-of-options", "refs/heads/"+branch, to, from); err != nil {
		return false, fmt.Errorf("finish advance of %s: %w", path, err)
	}
	return true, nil
}

// Clean reports whether the worktree at path has no modified, staged or
// untracked file (`status --porcelain -uall` is empty).
func (r *Repo) Clean(ctx context.Context, path string) (bool, error) {
	// The untracked cache (kept in the worktree's index) lets repeated
	// checks of an unchanged pool worktree skip most of the directory walk.
	out, err := run(ctx, path, "-c", "core.untrackedCache=true", "status", "--porcelain", "-uall")
	if err != nil {
		return false, fmt.Errorf("status of %s: %w", path, err)
	}
	return len(out) == 0, nil
}
