package gitops

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/grove-dev/grove"
)

// RetireOptions tune Retire.
type RetireOptions struct {
	// Force moves a worktree the gate did not judge safe into the trash as
	// it is (no re-check). The caller has taken a snapshot first (grove
	// close --force): the trash entry keeps everything anyway, and the
	// snapshot is what is left once the entry is purged.
	Force bool
	// Manifest carries what the caller knows (Task, Session, Reason); the
	// rest is filled in by Retire.
	Manifest TrashManifest
}

// TrashEntry is what Retire did with a worktree.
type TrashEntry struct {
	// Dir is the trash entry holding the worktree, its admin dir and its
	// manifest ("" when nothing was kept: see NotKept).
	Dir      string
	Manifest TrashManifest
	// NotKept says why the worktree was removed without a trash copy
	// (the trash is on another filesystem than the worktree) or why
	// nothing was done (it was no worktree); "" when Dir holds it.
	NotKept string
}

// Retire removes the worktree at path by moving it into a fresh entry of
// trashDir, with git's administrative dir for it, and deletes
// refs/heads/<branch> (branch "" keeps every branch). It is the one
// function that moves, unregisters or deletes a worktree; nothing is
// deleted here: the entry stays until PurgeTrash (retention) or
// RestoreTrash (undo). The commits the entry needs are pinned by
// refs/grove/trash/<entry>/{tip,head} while it lives.
//
// Three cases:
//
//   - rep is the at-risk gate's safe report for path and branch (AtRisk
//     with GateOptions.Branch = branch, passed unchanged): the directory
//     is renamed into the entry, re-checked there as the gate checks a
//     worktree (anything changed since the gate: moved back, refused with
//     ErrAtRisk), then under the repository lock the admin dir is moved
//     into the entry (git no longer lists the worktree) and the branch is
//     deleted with a compare-and-swap against the tip the gate judged.
//   - opt.Force (the caller took a snapshot): the same without the
//     re-check; HEAD and tip are read under the lock.
//   - the directory is gone: the worktree's own record alone is moved
//     into an entry (never a repository-wide prune), after checking that
//     the directory is not in the trash (a retire that died after moving
//     it: that retire is finished instead; one still working gives an
//     error) and not at the path its admin dir's gitdir file names.
//
// Otherwise (a report that is not safe, no Force) it refuses with
// ErrAtRisk and changes nothing. A locked missing worktree is refused
// (ErrAtRisk). A path git does not record as a linked worktree of r is
// RemoveWorktree's business (nothing of it is kept: NotKept says so).
// When the directory cannot be renamed into the trash because it is on
// another filesystem, the removal falls back to the gate's answer alone:
// RemoveWorktree deletes it (forcing only what a snapshot covers), and
// NotKept says so.
//
// Every step is recorded in the manifest and ends at a failpoint
// (retire.after-pin, retire.after-move, retire.after-admin-move,
// retire.after-unregister, retire.after-branch-delete); an entry a crash
// left is finished by the next Retire of the same path, by SweepTrash,
// or by PurgeTrash, from what is actually on disk.
func (r *Repo) Retire(ctx context.Context, path, branch, trashDir string, rep Report, opt RetireOptions) (TrashEntry, error) {
	abs, err := absPath(path)
	if err != nil {
		return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", path, err)
	}
	if branch != "" && !validRefName("refs/heads/"+branch) {
		return TrashEntry{}, grove.Userf(grove.ErrUsage, "", "invalid branch name: %q", branch)
	}
	if trashDir == "" {
		return TrashEntry{}, fmt.Errorf("remove worktree %s: no trash directory", path)
	}
	if _, err := os.Stat(abs); errors.Is(err, fs.ErrNotExist) {
		return r.retireMissing(ctx, abs, branch, trashDir, opt)
	}
	safe := rep.Safe && rep.Head != "" && samePath(rep.Path, abs) && (branch == "" || rep.Branch == branch)
	if !safe && !opt.Force {
		return TrashEntry{}, grove.Userf(grove.ErrAtRisk, "run the at-risk gate first, or snapshot it and force",
			"worktree %s not removed: the at-risk gate did not judge it safe", path)
	}
	real, recorded, gd, ok := r.retireTarget(abs)
	if !ok {
		return TrashEntry{NotKept: "not a linked worktree recorded at its real path"}, r.RemoveWorktree(ctx, path, branch)
	}
	m := opt.Manifest
	m.Repo, m.CommonDir, m.Path, m.Branch = r.Root, r.CommonDir, recorded, branch
	m.AdminID, m.Forced, m.Time, m.Size = filepath.Base(gd), !safe, time.Now().UTC(), -1
	if safe {
		m.Head, m.BranchTip = rep.Head, rep.BranchTip
	} else {
		if m.Head, err = r.worktreeHead(ctx, real); err != nil {
			return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", path, err)
		}
		if branch != "" {
			if m.BranchTip, err = r.RefCommit(ctx, "refs/heads/"+branch); err != nil {
				return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", path, err)
			}
		}
	}

	t, err := r.beginEntry(ctx, trashDir, filepath.Base(real), &m)
	if err != nil {
		return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", path, err)
	}
	if err := os.Rename(real, t.worktree()); err != nil {
		cctx, cancel := cleanupCtx(ctx)
		derr := t.discard(cctx, r.CommonDir)
		cancel()
		if errors.Is(err, syscall.EXDEV) {
			why := fmt.Sprintf("trash %s is on another filesystem than %s: removed without a trash copy (the at-risk gate's answer alone)", trashDir, real)
			if derr != nil {
				return TrashEntry{NotKept: why}, fmt.Errorf("remove worktree %s: %w", path, derr)
			}
			return TrashEntry{NotKept: why}, r.RemoveWorktree(ctx, path, branch)
		}
		return TrashEntry{}, fmt.Errorf("remove worktree %s: move into the trash: %w", path, errors.Join(err, derr))
	}
	m.Step = StepMoved
	werr := t.write(&m)
	grove.Failpoint("retire.after-move")
	if werr == nil && safe {
		werr = r.recheckMoved(ctx, abs, t.worktree(), gd, rep)
	}
	if werr == nil {
		werr = r.unregister(ctx, t, &m, safe)
	}
	if werr != nil && m.Step == StepMoved {
		return TrashEntry{}, r.moveBack(ctx, t, real, gd, werr)
	}
	if werr == nil {
		werr = t.done(&m)
	}
	t.unlock()
	return TrashEntry{Dir: t.dir, Manifest: m}, werr
}

// beginEntry makes the entry for m (manifest at StepBegin) and pins its
// commits. Nothing is moved yet; on error nothing is left.
func (r *Repo) beginEntry(ctx context.Context, trashDir, base string, m *TrashManifest) (*trashEntry, error) {
	t, err := newTrashEntry(trashDir, base)
	if err != nil {
		return nil, err
	}
	m.Entry, m.Step = t.name, StepBegin
	cctx, cancel := cleanupCtx(ctx)
	defer cancel()
	if err := t.write(m); err != nil {
		return nil, errors.Join(err, t.discard(cctx, r.CommonDir))
	}
	if err := pin(ctx, r.CommonDir, t.name, m.BranchTip, m.Head); err != nil {
		return nil, errors.Join(err, t.discard(cctx, r.CommonDir))
	}
	grove.Failpoint("retire.after-pin")
	return t, nil
}

// worktreeHead is the commit HEAD of the worktree at dir points at, ""
// when it is unborn.
func (r *Repo) worktreeHead(ctx context.Context, dir string) (string, error) {
	out, err := run(ctx, dir, "rev-parse", "-q", "--verify", "HEAD^{commit}")
	if err != nil && exitCode(err) == 1 {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return trim(out), nil
}

// moveBack undoes a retire refused or failed before git's record moved:
// the directory goes back to real and the entry is discarded. A directory
// that cannot be moved back stays in the entry, marked KEPT.
func (r *Repo) moveBack(ctx context.Context, t *trashEntry, real, gd string, cause error) error {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	if rerr := os.Rename(t.worktree(), real); rerr != nil {
		kerr := t.keep(fmt.Sprintf("%s could not be moved back to %s: %v", t.worktree(), real, rerr))
		return fmt.Errorf("%w (and moving it back failed: %v; it is kept at %s: move it back by hand)", cause, errors.Join(rerr, kerr), t.worktree())
	}
	if derr := t.discard(ctx, r.CommonDir); derr != nil {
		cause = fmt.Errorf("%w (and: %v)", cause, derr)
	}
	if !exists(gd) {
		return fmt.Errorf("%w (moved back to %s, but git's record of it is gone: git worktree list no longer shows it)", cause, real)
	}
	return cause
}

// unregister is the locked part of a retire: the worktree must still be
// registered at m.Path with nothing there (the directory is in the
// entry), HEAD and tip as judged (safe) or as they are now (forced, the
// pins and the manifest follow them); then git's admin dir moves into
// the entry. An error before the admin dir moved leaves m.Step at
// StepMoved.
func (r *Repo) unregister(ctx context.Context, t *trashEntry, m *TrashManifest, safe bool) error {
	unlock, err := r.Lock(ctx)
	if err != nil {
		return fmt.Errorf("remove worktree %s: %w", m.Path, err)
	}
	defer unlock()
	wts, err := r.Worktrees(ctx)
	if err != nil {
		return fmt.Errorf("remove worktree %s: %w", m.Path, err)
	}
	var mine *WorktreeEntry
	for i := range wts {
		w := &wts[i]
		if samePath(w.Path, m.Path) {
			mine = w
		} else if m.Branch != "" && w.Branch == m.Branch {
			return grove.Userf(grove.ErrConflict, "", "branch %s is checked out at %s", m.Branch, w.Path)
		}
	}
	hint := "run the removal again: the at-risk gate judges it as it is now"
	switch {
	case mine == nil:
		return fmt.Errorf("remove worktree %s: git no longer records it as a worktree", m.Path)
	case mine == &wts[0] || samePath(mine.Path, r.Root):
		return fmt.Errorf("remove worktree %s: refusing to remove the main worktree", m.Path)
	case !gone(mine.Path):
		return fmt.Errorf("remove worktree %s: something is at its path again", m.Path)
	}
	tip := ""
	if m.Branch != "" {
		if tip, err = r.RefCommit(ctx, "refs/heads/"+m.Branch); err != nil {
			return fmt.Errorf("remove worktree %s: %w", m.Path, err)
		}
	}
	if safe {
		if mine.Head != m.Head {
			return grove.Userf(grove.ErrAtRisk, hint, "worktree %s not removed: its HEAD moved from %s to %s after the at-risk gate judged it", m.Path, shortSHA(m.Head), shortSHA(mine.Head))
		}
		if tip != m.BranchTip {
			return grove.Userf(grove.ErrAtRisk, hint, "worktree %s not removed: branch %s moved from %s to %s after the at-risk gate judged it", m.Path, m.Branch, shortSHA(m.BranchTip), shortSHA(tip))
		}
	} else if mine.Head != m.Head || tip != m.BranchTip {
		m.Head, m.BranchTip = mine.Head, tip
		if err := pin(ctx, r.CommonDir, t.name, tip, mine.Head); err != nil {
			return err
		}
		if err := t.write(m); err != nil {
			return err
		}
	}
	gd := filepath.Join(r.CommonDir, "worktrees", m.AdminID)
	if p, err := recordedPath(gd); err != nil || !samePath(p, m.Path) {
		return fmt.Errorf("remove worktree %s: its admin dir %s no longer records it", m.Path, gd)
	}
	if err := moveDir(gd, t.admin()); err != nil {
		return fmt.Errorf("remove worktree %s: move its admin dir into the trash: %w", m.Path, err)
	}
	grove.Failpoint("retire.after-admin-move")
	m.Step = StepUnregistered
	if err := t.write(m); err != nil {
		// The entry holds both halves; a manifest behind is finished from
		// what is on disk (resume), and never purged meanwhile.
		return err
	}
	grove.Failpoint("retire.after-unregister")
	// Still under the lock (one hold for git's bookkeeping, as before the
	// trash): the branch, checked out nowhere else (above), at the tip
	// judged (safe) or pinned (forced); its commits stay pinned.
	if tip != "" {
		if err := r.deleteRef(ctx, "refs/heads/"+m.Branch, tip); err != nil {
			m.BranchKept = err.Error()
		}
	}
	grove.Failpoint("retire.after-branch-delete")
	return nil
}

// done marks the entry done; a branch that could not be deleted is the
// error (the worktree is in the trash all the same).
func (t *trashEntry) done(m *TrashManifest) error {
	m.Step = StepDone
	err := t.write(m)
	if m.BranchKept != "" {
		err = errors.Join(errors.New(m.BranchKept), err)
	}
	if err != nil {
		return fmt.Errorf("remove worktree %s: worktree moved to the trash (%s), branch kept: %w", m.Path, t.dir, err)
	}
	return nil
}

// deleteBranchLocked deletes the branch with a compare-and-swap against
// m.BranchTip, unless another worktree has it checked out. Gone already
// is fine. Under the repository lock.
func (r *Repo) deleteBranchLocked(ctx context.Context, m *TrashManifest) error {
	ref := "refs/heads/" + m.Branch
	tip, err := r.RefCommit(ctx, ref)
	if err != nil || tip == "" {
		return err
	}
	if tip != m.BranchTip {
		return fmt.Errorf("branch %s moved on to %s since the removal (%s): kept", m.Branch, shortSHA(tip), shortSHA(m.BranchTip))
	}
	wts, err := r.Worktrees(ctx)
	if err != nil {
		return err
	}
	for _, w := range wts {
		if w.Branch == m.Branch {
			return grove.Userf(grove.ErrConflict, "", "branch %s is checked out at %s", m.Branch, w.Path)
		}
	}
	return r.deleteRef(ctx, ref, tip)
}

// retireMissing is Retire of a worktree whose directory is gone.
func (r *Repo) retireMissing(ctx context.Context, abs, branch, trashDir string, opt RetireOptions) (TrashEntry, error) {
	// A retire that died after moving the directory: finish it.
	if dir, found, err := findRetiring(trashDir, r.CommonDir, abs); err != nil {
		return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", abs, err)
	} else if found {
		t, ok, err := lockEntry(dir)
		if err != nil {
			return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", abs, err)
		}
		if !ok {
			return TrashEntry{}, fmt.Errorf("remove worktree %s: it is being moved into the trash (%s) by another process: try again", abs, dir)
		}
		m, err := readManifest(dir) // again, under the lock
		if err != nil {
			t.unlock()
			return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", abs, err)
		}
		err = r.resume(ctx, t, &m)
		t.unlock()
		if err != nil || m.Step != "" {
			return TrashEntry{Dir: dir, Manifest: m}, err
		}
		// It had moved nothing yet: the entry is gone; forget the record.
	}

	unlock, err := r.Lock(ctx)
	if err != nil {
		return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", abs, err)
	}
	defer unlock()
	wts, err := r.Worktrees(ctx)
	if err != nil {
		return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", abs, err)
	}
	var mine *WorktreeEntry
	for i := range wts {
		w := &wts[i]
		if i > 0 && samePath(w.Path, abs) {
			mine = w
		} else if branch != "" && w.Branch == branch {
			return TrashEntry{}, grove.Userf(grove.ErrConflict, "", "branch %s is checked out at %s", branch, w.Path)
		}
	}
	m := opt.Manifest
	m.Repo, m.CommonDir, m.Path, m.Branch = r.Root, r.CommonDir, abs, branch
	m.Time, m.Size, m.Missing, m.Forced = time.Now().UTC(), -1, true, opt.Force
	gd := ""
	if mine != nil {
		if mine.Locked {
			return TrashEntry{}, grove.Userf(grove.ErrAtRisk, "if it is gone for good: git worktree unlock "+quoteArg(mine.Path),
				"worktree %s is locked: its record is kept though its directory is missing", mine.Path)
		}
		if gd, err = r.adminDirOf(mine.Path); err != nil {
			return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", abs, err)
		}
		if gd != "" {
			if exists(filepath.Join(gd, "locked")) {
				return TrashEntry{}, grove.Userf(grove.ErrAtRisk, "if it is gone for good: git worktree unlock "+quoteArg(mine.Path),
					"worktree %s is locked: its record is kept though its directory is missing", mine.Path)
			}
			// Not elsewhere: the .git file its gitdir names must be gone.
			b, err := os.ReadFile(filepath.Join(gd, "gitdir"))
			if err != nil {
				return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", abs, err)
			}
			if dotgit := trimGitdir(string(b)); !gone(dotgit) {
				return TrashEntry{}, fmt.Errorf("remove worktree %s: its record names %s, which exists: not removed", abs, dotgit)
			}
			m.AdminID = filepath.Base(gd)
		}
		m.Head = mine.Head
	}
	if branch != "" {
		if m.BranchTip, err = r.RefCommit(ctx, "refs/heads/"+branch); err != nil {
			return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", abs, err)
		}
	}
	if gd == "" && m.BranchTip == "" {
		return TrashEntry{NotKept: "nothing left of it: no record, no branch"}, nil
	}
	t, err := r.beginEntry(ctx, trashDir, filepath.Base(abs), &m)
	if err != nil {
		return TrashEntry{}, fmt.Errorf("remove worktree %s: %w", abs, err)
	}
	defer t.unlock()
	if gd != "" {
		if err := moveDir(gd, t.admin()); err != nil {
			return TrashEntry{Dir: t.dir, Manifest: m}, fmt.Errorf("remove worktree %s: move its admin dir into the trash: %w", abs, err)
		}
		grove.Failpoint("retire.after-admin-move")
	}
	m.Step = StepUnregistered
	werr := t.write(&m)
	grove.Failpoint("retire.after-unregister")
	if m.BranchTip != "" {
		if err := r.deleteBranchLocked(ctx, &m); err != nil {
			m.BranchKept = err.Error()
			werr = errors.Join(werr, err)
		}
	}
	grove.Failpoint("retire.after-branch-delete")
	m.Step = StepDone
	werr = errors.Join(werr, t.write(&m))
	m.Size = DiskUsage(t.dir)
	_ = t.write(&m)
	if werr != nil {
		return TrashEntry{Dir: t.dir, Manifest: m}, fmt.Errorf("remove worktree %s: %w", abs, werr)
	}
	return TrashEntry{Dir: t.dir, Manifest: m}, nil
}

// trimGitdir is the path an admin dir's gitdir file names (the
// worktree's .git file).
func trimGitdir(s string) string { return filepath.Clean(strings.TrimRight(s, " \t\n\r\v\f")) }

// findRetiring finds the trash entry of a retire of path (in the
// repository with common dir commonDir) that has not finished.
func findRetiring(trashDir, commonDir, path string) (dir string, found bool, err error) {
	ents, err := os.ReadDir(trashDir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		d := filepath.Join(trashDir, e.Name())
		mm, err := readManifest(d)
		if err != nil {
			continue
		}
		if (mm.Step == StepBegin || mm.Step == StepMoved || mm.Step == StepUnregistered) &&
			samePath(mm.CommonDir, commonDir) && samePath(mm.Path, path) {
			return d, true, nil
		}
	}
	return "", false, nil
}

// resume finishes a retire a crash interrupted, from what is on disk,
// with the entry locked: an entry that holds no part of the worktree
// while the worktree is back in place is discarded; otherwise the admin
// dir follows the directory into the entry (when the directory is in
// the entry and git's record still names the old, empty path) and the
// branch is deleted if it still points at the recorded tip.
func (r *Repo) resume(ctx context.Context, t *trashEntry, m *TrashManifest) error {
	if m.Step == StepDone {
		return nil
	}
	gd := ""
	if m.AdminID != "" {
		gd = filepath.Join(m.CommonDir, "worktrees", m.AdminID)
	}
	registered := false
	if gd != "" {
		if p, err := recordedPath(gd); err == nil && samePath(p, m.Path) {
			registered = true
		}
	}
	hasWT, hasAdmin := exists(t.worktree()), exists(t.admin())
	if !hasWT && !hasAdmin && (!m.Missing || registered) {
		// Never moved, or moved back: nothing of the worktree is here.
		if err := unpin(ctx, m.CommonDir, m.Entry); err != nil {
			return err
		}
		for _, f := range []string{trashManifest, trashManifest + ".tmp"} {
			_ = os.Remove(filepath.Join(t.dir, f))
		}
		_ = os.Remove(filepath.Join(t.dir, trashLock))
		_ = os.Remove(t.dir)
		m.Step = ""
		return nil
	}
	// Pins first: they are what keeps the commits once the branch goes.
	if err := pin(ctx, m.CommonDir, m.Entry, m.BranchTip, m.Head); err != nil {
		return err
	}
	unlock, err := r.Lock(ctx)
	if err != nil {
		return err
	}
	if !hasAdmin && registered && gone(m.Path) {
		if err := moveDir(gd, t.admin()); err != nil {
			unlock()
			return fmt.Errorf("resume retire of %s: move its admin dir into the trash: %w", m.Path, err)
		}
	}
	m.Step = StepUnregistered
	werr := t.write(m)
	if m.Branch != "" && m.BranchTip != "" {
		if err := r.deleteBranchLocked(ctx, m); err != nil {
			m.BranchKept = err.Error()
		}
	}
	unlock()
	m.Step = StepDone
	m.Size = DiskUsage(t.dir)
	return errors.Join(werr, t.write(m))
}

// cleanupCtx is the context for undoing a step: it runs even when ctx is
// done (that is often why it undoes), for at most 30 seconds.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
}
