package gitops

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The trash (RetireWorktree, SweepTrash) holds one directory per retired
// worktree, <name>-<random>/, with:
const (
	trashWorktree = "wt"   // the worktree, moved there
	trashLock     = "lock" // flocked while a RetireWorktree works on the entry
	trashKept     = "KEPT" // why the entry must stay: a worktree that could not be moved back
)

// trashEntry is a trash directory a RetireWorktree holds (its lock file
// flocked), so that a concurrent SweepTrash leaves it alone.
type trashEntry struct {
	dir  string
	lock *os.File
}

// newTrashEntry makes a fresh entry in trashDir and locks it. It returns
// nil (and no error) when a SweepTrash locked it first, which then
// deletes it.
func newTrashEntry(trashDir, name string) (*trashEntry, error) {
	if err := os.MkdirAll(trashDir, 0o700); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(trashDir, strings.ReplaceAll(name, "*", "_")+"-")
	if err != nil {
		return nil, err
	}
	f, ok, err := tryFlock(filepath.Join(dir, trashLock))
	if err != nil {
		_ = os.Remove(filepath.Join(dir, trashLock))
		_ = os.Remove(dir)
		return nil, err
	}
	if !ok {
		return nil, nil
	}
	return &trashEntry{dir: dir, lock: f}, nil
}

func (t *trashEntry) worktree() string { return filepath.Join(t.dir, trashWorktree) }

// remove deletes the entry and all it holds, then unlocks it.
func (t *trashEntry) remove() error {
	defer t.lock.Close()
	return removeAllWritable(t.dir)
}

// discard deletes the entry once its worktree is moved back (or was
// never moved): only the lock file and the empty directory, never
// anything else.
func (t *trashEntry) discard() {
	defer t.lock.Close()
	_ = os.Remove(filepath.Join(t.dir, trashLock))
	_ = os.Remove(t.dir)
}

// keep marks the entry for SweepTrash to leave alone, saying why, and
// unlocks it.
func (t *trashEntry) keep(why string) {
	defer t.lock.Close()
	_ = os.WriteFile(filepath.Join(t.dir, trashKept), []byte(why+"\n"), 0o600)
}

// tryFlock opens path (creating it) and takes an exclusive flock without
// waiting. ok is false when another descriptor holds it.
func tryFlock(path string) (f *os.File, ok bool, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, false, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return f, true, nil
}

// SweepTrash deletes what RetireWorktree left in trashDir after a crash:
// worktrees the at-risk gate approved, moved there and not yet deleted.
//
// It is safe to call at any time: it skips entries a RetireWorktree (in
// this process or another) is working on, and it never deletes an entry
// marked KEPT (a worktree RetireWorktree refused to remove but could not
// move back): those are reported in the error, with their path, until
// someone moves them back. Read-only directories (a Go module cache,
// chmod -w) are made writable to be deleted, inside trashDir only.
func SweepTrash(trashDir string) error {
	ents, err := os.ReadDir(trashDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if err := sweepEntry(filepath.Join(trashDir, e.Name()), e); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func sweepEntry(p string, e fs.DirEntry) error {
	if !e.IsDir() { // not one of ours (a symlink is removed, not followed)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	f, ok, err := tryFlock(filepath.Join(p, trashLock))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil // deleted meanwhile
	case errors.Is(err, os.ErrPermission):
		// A read-only directory: not an entry a RetireWorktree is making
		// (those are 0700 and hold their lock file from the start).
	case err != nil:
		return fmt.Errorf("sweep %s: %w", p, err)
	case !ok:
		return nil // a RetireWorktree is working on it
	default:
		defer f.Close()
	}
	// Under the lock: keep() writes KEPT before it unlocks.
	if b, err := os.ReadFile(filepath.Join(p, trashKept)); err == nil {
		return fmt.Errorf("kept %s: %s", p, firstLine(string(b)))
	}
	if err := removeAllWritable(p); err != nil {
		return fmt.Errorf("sweep %s: %w", p, err)
	}
	return nil
}

// removeAllWritable is os.RemoveAll that also deletes read-only
// directories (a Go module cache, chmod -w): when RemoveAll fails, it
// gives every directory under p (symlinks are never followed) its owner's
// read, write and search permission and tries once more. It changes
// permissions, so it is only ever used inside the trash.
func removeAllWritable(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil // the last RemoveAll reports what is left
		}
		// Before WalkDir reads q: that read needs the permission too.
		if info, err := d.Info(); err == nil && info.Mode().Perm()&0o700 != 0o700 {
			_ = os.Chmod(q, info.Mode().Perm()|0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}
