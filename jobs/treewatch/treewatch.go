// Package treewatch tells whether anything in a directory tree changed
// since it was put under watch, using inotify: the warm pool trusts a
// worktree it verified clean (a full git status, ~200 ms at 100k files)
// for as long as nothing in it has changed, so a task takes it without
// another status.
//
// A Tree is reliable only from the moment Watch returns: verify the
// tree's state (git status) after Watch, never before. Any event at all
// (a write, a new or removed file, a chmod, a rename, lost events on a
// queue overflow) marks the tree changed; callers then verify again.
package treewatch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// ErrUnsupported is returned by New where inotify does not exist.
var ErrUnsupported = errors.New("treewatch: not supported on this system")

// Watcher holds one inotify instance for many trees. Safe for concurrent
// use.
type Watcher struct {
	mu    sync.Mutex
	fd    int
	trees map[int32]*Tree // by watch descriptor
	buf   []byte
}

// Tree is one watched directory tree.
type Tree struct {
	w       *Watcher
	root    string
	wds     []int32
	changed bool // guarded by w.mu
	closed  bool // guarded by w.mu
}

// Root is the directory the tree was watched from.
func (t *Tree) Root() string { return t.root }

// Watch puts every directory under root under watch (symlinks are not
// followed). It fails when root is not a directory or the watch limit
// (fs.inotify.max_user_watches) is reached; nothing stays watched then.
func (w *Watcher) Watch(root string) (*Tree, error) {
	if fi, err := os.Lstat(root); err != nil {
		return nil, fmt.Errorf("watch %s: %w", root, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("watch %s: not a directory (a symlink is not followed)", root)
	}
	t := &Tree{w: w, root: root}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		wd, err := w.add(p, t)
		if err != nil {
			return fmt.Errorf("watch %s: %w", p, err)
		}
		t.wds = append(t.wds, wd)
		return nil
	})
	if err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// Changed reports whether anything in the tree changed since Watch (or the
// tree was closed). It reads every event the kernel has queued first, so a
// change made before the call is never missed.
func (t *Tree) Changed() bool {
	t.w.mu.Lock()
	defer t.w.mu.Unlock()
	t.w.drainLocked()
	return t.changed || t.closed
}

// Close stops watching the tree. Safe to call twice, and from another
// goroutine while the watcher serves other trees: the watches go in
// batches (a 10k-file tree has ~1,000 directories, ~5 ms of syscalls), so
// other trees' Changed never waits for all of them.
func (t *Tree) Close() {
	w := t.w
	w.mu.Lock()
	if t.closed {
		w.mu.Unlock()
		return
	}
	t.closed = true
	wds := t.wds
	t.wds = nil
	w.mu.Unlock()
	const batch = 64
	for len(wds) > 0 {
		n := min(batch, len(wds))
		w.mu.Lock()
		for _, wd := range wds[:n] {
			// A descriptor the kernel gave again to another tree (the same
			// directory watched anew) is that tree's now: not removed.
			if w.trees[wd] == t {
				delete(w.trees, wd)
				w.rm(wd)
			}
		}
		w.mu.Unlock()
		wds = wds[n:]
	}
}
