package gitops

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/grove-dev/grove"
)

// RestoreTrash puts the worktree held by the trash entry at dir back,
// registered with git again, and deletes the entry. dest is where it
// goes ("" for where it was); nothing may be there.
//
// The directory and git's admin dir are renamed back as they are, so the
// index, HEAD, reflog, per-worktree refs, submodules' module stores and
// nested repositories are exactly as they were (stashes live in the
// repository and were never touched); the admin dir gets its old name
// under $COMMON/worktrees unless that is taken (then <name>-<n>), and the
// gitdir file and the worktree's .git file are rewritten to name each
// other. The branch is recreated at the recorded tip if it is gone. If
// it exists at another commit, or is checked out in another worktree,
// the restore is refused (*grove.UserError, ErrConflict) and nothing
// changes: grove never moves a branch someone else moved. An entry whose
// directory was already gone when it was removed gives back the admin
// dir alone, on an empty directory (git status then shows every file
// deleted; git checkout brings them back).
//
// An unfinished retire is finished first. Steps end at failpoints
// (restore.after-mark, restore.after-move, restore.after-admin-move,
// restore.after-relink); a restore that dies midway is finished by the
// next RestoreTrash of the entry (the manifest records where it was
// going).
func RestoreTrash(ctx context.Context, dir, dest string) (TrashManifest, error) {
	t, ok, err := lockEntry(dir)
	if err != nil {
		return TrashManifest{}, fmt.Errorf("restore %s: %w", dir, err)
	}
	if !ok {
		if !exists(dir) {
			return TrashManifest{}, grove.Userf(grove.ErrNotFound, "grove trash ls shows the entries", "no trash entry %s", filepath.Base(dir))
		}
		return TrashManifest{}, grove.Userf(grove.ErrConflict, "try again in a moment", "trash entry %s is in use", filepath.Base(dir))
	}
	defer t.unlock()
	m, err := readManifest(dir)
	if err != nil {
		return m, fmt.Errorf("restore %s: %w", dir, err)
	}
	r, err := Open(ctx, m.Repo)
	if err != nil {
		return m, fmt.Errorf("restore %s: repository %s: %w", dir, m.Repo, err)
	}
	switch m.Step {
	case StepBegin, StepMoved, StepUnregistered:
		if err := r.resume(ctx, t, &m); err != nil {
			return m, fmt.Errorf("restore %s: finish its removal first: %w", dir, err)
		}
		if m.Step == "" {
			return m, grove.Userf(grove.ErrNotFound, "", "trash entry %s held nothing: the worktree was never moved", filepath.Base(dir))
		}
	case StepPurging:
		return m, grove.Userf(grove.ErrNotFound, "grove trash purge "+m.Entry+" finishes it", "trash entry %s is being purged", m.Entry)
	}
	if m.Step == StepDone {
		if err := r.planRestore(ctx, t, &m, dest); err != nil {
			return m, err
		}
	}
	if err := r.finishRestore(ctx, t, &m); err != nil {
		return m, err
	}
	return m, nil
}

// planRestore checks the restore can be done and records it in the
// manifest (StepRestoring, RestorePath, RestoreID); the branch is
// recreated if gone. Nothing else changes; a refusal changes nothing.
func (r *Repo) planRestore(ctx context.Context, t *trashEntry, m *TrashManifest, dest string) error {
	if dest == "" {
		dest = m.Path
	}
	dest, err := absPath(dest)
	if err != nil {
		return fmt.Errorf("restore %s: %w", t.dir, err)
	}
	if exists(dest) {
		return grove.Userf(grove.ErrConflict, "restore it elsewhere with --path DIR, or move what is there away",
			"cannot restore %s: something is at %s", m.Entry, dest)
	}
	if !exists(filepath.Dir(dest)) {
		if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
			return fmt.Errorf("restore %s: %w", t.dir, err)
		}
	}
	unlock, err := r.Lock(ctx)
	if err != nil {
		return fmt.Errorf("restore %s: %w", t.dir, err)
	}
	defer unlock()
	if m.Branch != "" {
		if err := r.restoreBranch(ctx, m); err != nil {
			return err
		}
	}
	id := m.AdminID
	if id == "" {
		id = filepath.Base(dest)
	}
	base := filepath.Join(r.CommonDir, "worktrees")
	for n := 1; exists(filepath.Join(base, id)); n++ {
		id = m.AdminID + "-" + strconv.Itoa(n)
	}
	m.Step, m.RestorePath, m.RestoreID = StepRestoring, dest, id
	if err := t.write(m); err != nil {
		return fmt.Errorf("restore %s: %w", t.dir, err)
	}
	grove.Failpoint("restore.after-mark")
	return nil
}

// restoreBranch recreates m.Branch at m.BranchTip if it is gone; it must
// otherwise point there and be checked out nowhere. Under the lock.
func (r *Repo) restoreBranch(ctx context.Context, m *TrashManifest) error {
	ref := "refs/heads/" + m.Branch
	tip, err := r.RefCommit(ctx, ref)
	if err != nil {
		return fmt.Errorf("restore %s: %w", m.Entry, err)
	}
	wts, err := r.Worktrees(ctx)
	if err != nil {
		return fmt.Errorf("restore %s: %w", m.Entry, err)
	}
	for _, w := range wts {
		if w.Branch == m.Branch {
			return grove.Userf(grove.ErrConflict, "check it out elsewhere (git switch) first, then restore again",
				"cannot restore %s: branch %s is checked out at %s", m.Entry, m.Branch, w.Path)
		}
	}
	switch {
	case tip == m.BranchTip:
		return nil
	case tip != "":
		return grove.Userf(grove.ErrConflict, "rename that branch (git branch -m "+quoteArg(m.Branch)+" NEW), then restore again",
			"cannot restore %s: branch %s now points at %s, not at %s as when it was removed", m.Entry, m.Branch, shortSHA(tip), shortSHA(m.BranchTip))
	case m.BranchTip == "":
		return nil
	}
	if _, err := runRetry(ctx, r.Root, "update-ref", "-m", "grove: trash restore", "--end-of-options", ref, m.BranchTip, ""); err != nil {
		return fmt.Errorf("restore %s: recreate branch %s: %w", m.Entry, m.Branch, err)
	}
	return nil
}

// finishRestore moves the directory and the admin dir to where the
// manifest says, links them, and deletes the entry. Every step checks
// whether it was done already (a restore that died midway).
func (r *Repo) finishRestore(ctx context.Context, t *trashEntry, m *TrashManifest) error {
	if m.Step != StepRestoring {
		return fmt.Errorf("restore %s: entry is at step %q", t.dir, m.Step)
	}
	dest := m.RestorePath
	if exists(t.worktree()) {
		if exists(dest) {
			return grove.Userf(grove.ErrConflict, "move what is there away, then restore again", "cannot restore %s: something is at %s", m.Entry, dest)
		}
		if err := os.Rename(t.worktree(), dest); err != nil {
			if errors.Is(err, syscall.EXDEV) {
				return grove.Userf(grove.ErrUsage, "restore it on the trash's filesystem (the default path is)", "cannot restore %s to %s: another filesystem", m.Entry, dest)
			}
			return fmt.Errorf("restore %s: %w", t.dir, err)
		}
	} else if !exists(dest) {
		if err := os.Mkdir(dest, 0o755); err != nil { // a worktree whose directory was gone
			return fmt.Errorf("restore %s: %w", t.dir, err)
		}
	}
	grove.Failpoint("restore.after-move")
	gd := filepath.Join(r.CommonDir, "worktrees", m.RestoreID)
	if exists(t.admin()) {
		if err := os.MkdirAll(filepath.Dir(gd), 0o755); err != nil {
			return fmt.Errorf("restore %s: %w", t.dir, err)
		}
		if err := moveDir(t.admin(), gd); err != nil {
			return fmt.Errorf("restore %s: move its admin dir back: %w", t.dir, err)
		}
	}
	grove.Failpoint("restore.after-admin-move")
	if exists(gd) {
		if err := os.WriteFile(filepath.Join(gd, "gitdir"), []byte(filepath.Join(dest, ".git")+"\n"), 0o644); err != nil {
			return fmt.Errorf("restore %s: %w", t.dir, err)
		}
		if err := os.WriteFile(filepath.Join(dest, ".git"), []byte("gitdir: "+gd+"\n"), 0o644); err != nil {
			return fmt.Errorf("restore %s: %w", t.dir, err)
		}
	}
	grove.Failpoint("restore.after-relink")
	if err := unpin(ctx, m.CommonDir, t.name); err != nil {
		return err
	}
	if err := removeEntryShell(t.dir); err != nil {
		return fmt.Errorf("restore %s: worktree restored at %s, entry left: %w", t.dir, dest, err)
	}
	return nil
}

// removeEntryShell deletes an entry that no longer holds a worktree: its
// manifest, KEPT marker, lock and directory; anything else in it stays
// (and the directory with it).
func removeEntryShell(dir string) error {
	for _, f := range []string{trashManifest, trashManifest + ".tmp", trashKept, trashLock} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return os.Remove(dir)
}
