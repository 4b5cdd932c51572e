package jobs

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs/treewatch"
)

// A pool entry is "trusted clean" when a full status found it clean after
// it was put under an inotify watch, and since then nothing in it changed
// (no inotify event) and neither did git's own state of it, which lives
// outside the watched tree (its index, its HEAD, its branch's ref file): a
// task then takes it without another status (~20 ms at 10k files, ~200 ms
// at 100k). The trust lives in the daemon's memory only: after a restart,
// or where inotify is unavailable or its watch limit is reached, every
// claim runs the status as before.

// trust is what a verification recorded about a pool entry.
type trust struct {
	tree  *treewatch.Tree // nil: verified but not watched (claims check again)
	state gitState
}

// gitState fingerprints the files git keeps about a worktree outside it.
type gitState struct {
	index, head, ref fileStamp
}

type fileStamp struct {
	size  int64
	mtime time.Time
	ok    bool
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{size: fi.Size(), mtime: fi.ModTime(), ok: true}
}

// gitStateOf reads the fingerprint of the worktree at path on branch; ok
// is false when its git dir cannot be found.
func gitStateOf(repo *gitops.Repo, path, branch string) (gitState, bool) {
	gd, err := gitops.GitDirOf(path)
	if err != nil {
		return gitState{}, false
	}
	return gitState{
		index: stamp(filepath.Join(gd, "index")),
		head:  stamp(filepath.Join(gd, "HEAD")),
		ref:   stamp(filepath.Join(repo.CommonDir, "refs", "heads", filepath.FromSlash(branch))),
	}, true
}

// watcher returns the daemon's inotify watcher, opening it on first use;
// nil when there is none (every claim then verifies with a status).
func (d *Deps) watcher() *treewatch.Watcher {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.watch == nil && d.watchErr == nil {
		d.watch, d.watchErr = treewatch.New()
		if d.watchErr != nil {
			d.Logger.Info("warm pool: no inotify, every claim runs git status", "err", d.watchErr)
		}
	}
	return d.watch
}

// verifyClean puts ws's worktree under watch, then runs a full status;
// clean and watched, it is trusted until something in it changes.
func (d *Deps) verifyClean(ctx context.Context, repo *gitops.Repo, ws grove.Workspace) (bool, error) {
	d.forget(ws.ID)
	tree := d.watchTree(ws.Path)
	clean, err := repo.Clean(ctx, ws.Path)
	state, ok := gitStateOf(repo, ws.Path, ws.Branch)
	if err != nil || !clean || !ok {
		if tree != nil {
			tree.Close()
			tree = nil
		}
		if err != nil || !clean {
			return clean, err
		}
	}
	d.mu.Lock()
	d.trusted[ws.ID] = &trust{tree: tree, state: state}
	d.mu.Unlock()
	return true, nil
}

// trustedClean reports whether entry ws was verified clean and is watched,
// and nothing in it (nor git's state of it) changed since: a claim may skip
// its status.
func (d *Deps) trustedClean(repo *gitops.Repo, ws grove.Workspace) bool {
	d.mu.Lock()
	t := d.trusted[ws.ID]
	d.mu.Unlock()
	if t == nil || t.tree == nil || t.tree.Changed() {
		return false
	}
	now, ok := gitStateOf(repo, ws.Path, ws.Branch)
	return ok && now == t.state
}

// verified reports whether entry ws was verified clean and, if watched,
// nothing in it changed since: a pool pass need not verify it again (an
// unwatched one is checked by the claim that takes it).
func (d *Deps) verified(repo *gitops.Repo, ws grove.Workspace) bool {
	d.mu.Lock()
	t := d.trusted[ws.ID]
	d.mu.Unlock()
	return t != nil && (t.tree == nil || d.trustedClean(repo, ws))
}

// forget drops the trust in entry id (a task takes it, it moves, it goes).
func (d *Deps) forget(id int64) {
	d.mu.Lock()
	t := d.trusted[id]
	delete(d.trusted, id)
	d.mu.Unlock()
	if t != nil && t.tree != nil {
		go t.tree.Close() // ~5 ms at 10k files, not on a claim's path
	}
}

func (d *Deps) watchTree(path string) *treewatch.Tree {
	w := d.watcher()
	if w == nil {
		return nil
	}
	tree, err := w.Watch(path)
	if err != nil {
		d.Logger.Debug("warm pool: cannot watch, claims will run git status", "path", path, "err", err)
		return nil
	}
	return tree
}
