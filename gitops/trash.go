package gitops

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/grove-dev/grove"
	"golang.org/x/sys/unix"
)

// The trash ($GROVE_HOME/trash) holds one directory per removed worktree,
// named <UTC time>-<worktree name>-<random> (the name is also a ref
// component), with:
const (
	trashWorktree = "wt"            // the worktree directory, moved there
	trashAdmin    = "admin"         // git's administrative dir of it ($COMMON/worktrees/<id>), moved there
	trashManifest = "manifest.json" // TrashManifest: what it was, and how far the operation on it got
	trashLock     = "lock"          // flocked while a retire, purge or restore works on the entry
	trashKept     = "KEPT"          // why the entry must stay: never purged automatically
)

// Steps a TrashManifest records. Every operation on an entry is resumable
// from its step: retire begin -> moved -> unregistered -> done; then
// either purging (the entry is being deleted) or restoring (being put
// back).
const (
	StepBegin        = "begin"        // entry made, commits pinned, nothing moved yet
	StepMoved        = "moved"        // the worktree directory is in the entry
	StepUnregistered = "unregistered" // git's admin dir is in the entry: git no longer lists it
	StepDone         = "done"         // the branch is deleted (or kept, BranchKept says why)
	StepPurging      = "purging"      // a purge decided to delete it
	StepRestoring    = "restoring"    // a restore is putting it back (RestorePath, RestoreID)
)

// TrashManifest describes one trash entry. It is written atomically
// (temporary file, rename) at every step; an entry whose manifest cannot
// be read is never purged automatically (fail closed).
type TrashManifest struct {
	Entry     string    `json:"entry"`             // the entry's directory name
	Task      string    `json:"task,omitempty"`    // the task that owned the worktree, if any
	Session   string    `json:"session,omitempty"` // the session that owned it, if any
	Reason    string    `json:"reason,omitempty"`  // why it was removed (close, reap, pool, ...)
	Repo      string    `json:"repo"`              // the repository's main worktree
	CommonDir string    `json:"common_dir"`        // its git common dir
	Path      string    `json:"path"`              // where the worktree was (as git recorded it)
	Branch    string    `json:"branch,omitempty"`  // the branch removal deleted ("" none)
	BranchTip string    `json:"branch_tip,omitempty"`
	Head      string    `json:"head,omitempty"` // the worktree's HEAD commit
	AdminID   string    `json:"admin_id"`       // the name of its dir under $COMMON/worktrees
	Time      time.Time `json:"time"`           // when it was removed
	Size      int64     `json:"size"`           // bytes the entry holds (-1: not measured yet)
	Forced    bool      `json:"forced,omitempty"`
	Missing   bool      `json:"missing,omitempty"` // the directory was already gone: only git's record was kept
	Step      string    `json:"step"`
	// BranchKept says why the branch was not deleted (it moved on, or
	// deleting it failed); "" when it was deleted or there was none.
	BranchKept  string `json:"branch_kept,omitempty"`
	RestorePath string `json:"restore_path,omitempty"` // StepRestoring: where it goes
	RestoreID   string `json:"restore_id,omitempty"`   // StepRestoring: its admin dir name there
}

// TrashRefPrefix is where trash entries pin the commits they need:
// refs/grove/trash/<entry>/tip (the branch tip) and .../head (HEAD, when
// it differs). The at-risk gate does not count refs/grove/* as holding
// work, so these refs never make another worktree look safe.
const TrashRefPrefix = "refs/grove/trash/"

func pinRefs(entry string) (tip, head string) {
	return TrashRefPrefix + entry + "/tip", TrashRefPrefix + entry + "/head"
}

// pin points the entry's refs at tip and head (either may be "").
func pin(ctx context.Context, commonDir, entry, tip, head string) error {
	tipRef, headRef := pinRefs(entry)
	var in strings.Builder
	if tip != "" {
		fmt.Fprintf(&in, "update %s %s\n", tipRef, tip)
	}
	if head != "" && head != tip {
		fmt.Fprintf(&in, "update %s %s\n", headRef, head)
	}
	if in.Len() == 0 {
		return nil
	}
	if err := updateRefs(ctx, commonDir, "grove: trash", strings.Split(strings.TrimSuffix(in.String(), "\n"), "\n")...); err != nil {
		return fmt.Errorf("pin commits of trash entry %s: %w", entry, err)
	}
	return nil
}

// unpin deletes the entry's refs. A repository that is gone has none.
func unpin(ctx context.Context, commonDir, entry string) error {
	if commonDir == "" || gone(commonDir) {
		return nil
	}
	tipRef, headRef := pinRefs(entry)
	if err := updateRefs(ctx, commonDir, "grove: trash", "delete "+tipRef, "delete "+headRef); err != nil {
		return fmt.Errorf("unpin commits of trash entry %s: %w", entry, err)
	}
	return nil
}

// trashEntry is a trash directory this process holds (its lock file
// flocked), so that no concurrent retire, purge or restore touches it.
type trashEntry struct {
	dir  string
	name string
	lock *os.File
}

// entryName makes a fresh entry name: time first (sorts oldest first),
// then the worktree's name made safe for a ref component, then randomness.
func entryName(now time.Time, base string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	safe := strings.Map(func(c rune) rune {
		if c < 0x80 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return c
		}
		return '_'
	}, base)
	if len(safe) > 40 {
		safe = safe[:40]
	}
	return now.UTC().Format("20060102T150405") + "-" + safe + "-" + hex.EncodeToString(b[:])
}

// newTrashEntry makes a fresh entry in trashDir, locked.
func newTrashEntry(trashDir, base string) (*trashEntry, error) {
	if err := os.MkdirAll(trashDir, 0o700); err != nil {
		return nil, err
	}
	for range 5 {
		name := entryName(time.Now(), base)
		dir := filepath.Join(trashDir, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			return nil, err
		}
		// Waiting: a purge may be looking at the fresh entry; it leaves an
		// entry this young alone and lets go at once.
		f, err := flockWait(filepath.Join(dir, trashLock))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed before we locked it
		}
		if err != nil {
			_ = os.Remove(filepath.Join(dir, trashLock))
			_ = os.Remove(dir)
			return nil, err
		}
		return &trashEntry{dir: dir, name: name, lock: f}, nil
	}
	return nil, fmt.Errorf("make trash entry in %s: no free name", trashDir)
}

// lockEntry locks the existing entry dir. ok is false when another
// operation holds it (or it is gone).
func lockEntry(dir string) (t *trashEntry, ok bool, err error) {
	if _, err := os.Lstat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		return nil, false, err
	}
	f, ok, err := tryFlock(filepath.Join(dir, trashLock))
	if err != nil || !ok {
		return nil, false, err
	}
	if _, err := os.Lstat(dir); err != nil { // deleted between our stat and the lock
		f.Close()
		return nil, false, nil
	}
	return &trashEntry{dir: dir, name: filepath.Base(dir), lock: f}, true, nil
}

func (t *trashEntry) worktree() string { return filepath.Join(t.dir, trashWorktree) }
func (t *trashEntry) admin() string    { return filepath.Join(t.dir, trashAdmin) }
func (t *trashEntry) unlock()          { t.lock.Close() }

// write stores m as the entry's manifest, atomically.
func (t *trashEntry) write(m *TrashManifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(t.dir, trashManifest+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write manifest of %s: %w", t.dir, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(t.dir, trashManifest))
	}
	if err != nil {
		return fmt.Errorf("write manifest of %s: %w", t.dir, err)
	}
	return nil
}

// readManifest reads the manifest of the entry at dir.
func readManifest(dir string) (TrashManifest, error) {
	var m TrashManifest
	b, err := os.ReadFile(filepath.Join(dir, trashManifest))
	if err != nil {
		return m, fmt.Errorf("read manifest of %s: %w", dir, err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("read manifest of %s: %w", dir, err)
	}
	if m.Entry != filepath.Base(dir) || m.Step == "" {
		return m, fmt.Errorf("read manifest of %s: it names entry %q at step %q", dir, m.Entry, m.Step)
	}
	return m, nil
}

// kept reports why the entry must stay whatever its age: a KEPT marker
// (its text), or an error reading one (fail closed).
func kept(dir string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(dir, trashKept))
	switch {
	case err == nil:
		return "kept: " + firstLine(string(b)), true
	case errors.Is(err, fs.ErrNotExist):
		return "", false
	}
	return "cannot read its KEPT marker: " + err.Error(), true
}

// keep marks the entry so that no purge deletes it, saying why, and
// unlocks it. If the marker cannot be written the manifest still holds
// the entry (a step other than done is never purged).
func (t *trashEntry) keep(why string) error {
	defer t.unlock()
	if err := os.WriteFile(filepath.Join(t.dir, trashKept), []byte(why+"\n"), 0o600); err != nil {
		return fmt.Errorf("mark %s kept: %w", t.dir, err)
	}
	return nil
}

// discard deletes an entry that holds nothing of a worktree (never moved,
// or moved back): its manifest, lock and directory, nothing else; then
// unpins its refs.
func (t *trashEntry) discard(ctx context.Context, commonDir string) error {
	defer t.unlock()
	if exists(t.worktree()) || exists(t.admin()) {
		return fmt.Errorf("discard %s: it still holds a worktree", t.dir)
	}
	if err := unpin(ctx, commonDir, t.name); err != nil {
		return err
	}
	for _, f := range []string{trashManifest, trashManifest + ".tmp", trashLock} {
		_ = os.Remove(filepath.Join(t.dir, f))
	}
	if err := os.Remove(t.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("discard %s: %w", t.dir, err)
	}
	return nil
}

// tryFlock opens path (creating it) and takes an exclusive flock without
// waiting. ok is false when another descriptor holds it.
func tryFlock(path string) (f *os.File, ok bool, err error) {
	return grove.TryOpenFlock(path, unix.LOCK_EX, 0o600)
}

// flockWait opens path (creating it) and takes an exclusive flock,
// waiting for it.
func flockWait(path string) (*os.File, error) {
	return grove.OpenFlock(context.Background(), path, unix.LOCK_EX, 0o600)
}

// moveDir renames src to dst; across filesystems (EXDEV) it copies src to
// dst+".copy", renames that to dst, then deletes src (a crash leaves either
// no dst or a whole one). Used for git's admin dirs, which may live on
// another filesystem than the trash (they are small: index, HEAD, logs,
// and the module stores of submodules).
func moveDir(src, dst string) error {
	err := os.Rename(src, dst)
	if !errors.Is(err, syscall.EXDEV) {
		return err
	}
	tmp := dst + ".copy"
	_ = os.RemoveAll(tmp) // an earlier attempt's
	if err := copyTree(src, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	return os.RemoveAll(src)
}

// copyTree copies the directory src to dst (which must not exist):
// directories, regular files and symlinks, with their permissions.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(to, info.Mode().Perm()|0o700)
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case info.Mode().IsRegular():
			return copyFileMode(p, to, info.Mode().Perm())
		}
		return fmt.Errorf("%s: cannot copy a %v", p, info.Mode().Type())
	})
}

func copyFileMode(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// DiskUsage is the disk the tree at p holds (allocated blocks, each inode
// once), errors ignored: it is a figure for retention, not a check.
func DiskUsage(p string) int64 {
	var n int64
	seen := map[[2]uint64]bool{}
	_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			k := [2]uint64{uint64(st.Dev), st.Ino}
			if !seen[k] {
				seen[k] = true
				n += st.Blocks * 512
			}
			return nil
		}
		n += info.Size()
		return nil
	})
	return n
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
