package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// PoolFillArgs tops up a repository's warm pool and moves its clean
// entries forward to the default branch's tip.
type PoolFillArgs struct {
	RepoID int64 `json:"repo_id"` // 0: every repository
	// Tip is the commit that asked for this pass (a new tip after an
	// apply). Informational: the pass reads the tip itself.
	Tip string `json:"tip,omitempty"`
}

// Kind is stable: it is stored in river_job rows.
func (PoolFillArgs) Kind() string { return "pool_fill" }

// InsertOpts puts the job on the git queue. Jobs are not unique: a
// request while a pass runs makes that pass run again (FillPool), so none
// is lost and none waits on another.
func (PoolFillArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueGit, MaxAttempts: 3, Priority: priorityPool}
}

// PoolFillWorker keeps up to Deps.Warm checked-out worktrees per
// repository at the tip of its default branch.
type PoolFillWorker struct {
	river.WorkerDefaults[PoolFillArgs]
	d *Deps
}

// fillDelay is how long after the claim or apply that asks for it a pool
// pass is queued. A claim's task starts its agent in that window, and a
// pass beside it (a checkout: ~50 ms of CPU per thousand files) slowed the
// warm start by 30 ms at 10,000 files on 2 cores; the requests of a burst
// make one pass.
const fillDelay = 250 * time.Millisecond

// requestFill asks for a pool pass for a repository whose tip is (or just
// became) tip: once tx commits, the pass is queued fillDelay later (one
// for all the requests in that time). A no-op without a pool. A request
// lost with the daemon costs nothing durable: the periodic pass (every
// 30 s) and the pass at start fill the pool all the same.
func (d *Deps) requestFill(client *Client, tx *store.Tx, repoID int64, tip string) error {
	if d.Warm <= 0 {
		return nil
	}
	tx.AfterCommit(func() { d.fillSoon(client, repoID, tip) })
	return nil
}

// fillSoon queues a pool pass for repoID fillDelay from now, unless one is
// already coming.
func (d *Deps) fillSoon(client *Client, repoID int64, tip string) {
	st := d.fillState(repoID)
	if !st.coming.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(fillDelay, func() {
		st.coming.Store(false)
		select {
		case <-d.stopping:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := client.Insert(ctx, PoolFillArgs{RepoID: repoID, Tip: tip}, nil); err != nil {
			d.Logger.Warn("pool pass not queued; the periodic one will do", "repo", repoID, "err", err)
			return
		}
		if d.wake != nil {
			d.wake()
		}
	})
}

// fillState is a repository's pool-pass coordination: one pass at a time
// (mu), and a request flag (again) that a running pass honours by running
// once more.
type fillState struct {
	mu     sync.Mutex
	again  atomic.Bool
	coming atomic.Bool // a pass is queued in fillDelay (fillSoon)
}

func (d *Deps) fillState(repoID int64) *fillState {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fills == nil {
		d.fills = map[int64]*fillState{}
	}
	if d.fills[repoID] == nil {
		d.fills[repoID] = &fillState{}
	}
	return d.fills[repoID]
}

// Timeout allows several large checkouts.
func (w *PoolFillWorker) Timeout(*river.Job[PoolFillArgs]) time.Duration { return 30 * time.Minute }

// Work moves clean entries forward in place (a checkout of the difference,
// never a re-creation), marks dirty ones stale (never reused; the reaper
// and the gate decide their fate), and creates entries up to Deps.Warm.
func (w *PoolFillWorker) Work(ctx context.Context, job *river.Job[PoolFillArgs]) error {
	return FillPool(ctx, w.d, job.Args.RepoID)
}

// FillPool is one pool pass for a repository, or for every known one when
// repoID is 0 (see PoolFillWorker).
func FillPool(ctx context.Context, d *Deps, repoID int64) error {
	if repoID == 0 {
		repos, err := d.Store.Repos(ctx)
		if err != nil {
			return err
		}
		for _, r := range repos {
			if err := FillPool(ctx, d, r.ID); err != nil {
				return err
			}
		}
		return nil
	}
	// One pass at a time per repository (one daemon per home). A request
	// while a pass runs only sets the flag: the running pass goes again,
	// so no worker waits on the lock and no request is lost.
	st := d.fillState(repoID)
	st.again.Store(true)
	for st.mu.TryLock() {
		err := func() error {
			defer st.mu.Unlock()
			// A claim or a tip move during a pass requests another one.
			for st.again.Swap(false) {
				if err := fillOnce(ctx, d, repoID); err != nil {
					st.again.Store(true) // the retry of this job, or the next, goes again
					return err
				}
			}
			return nil
		}()
		if err != nil || !st.again.Load() {
			return err
		}
	}
	return nil
}

// fillOnce is one pass. Each entry it works on is taken first
// (pool_moving), so a task never claims an entry being moved, and an entry
// a task claimed meanwhile is left alone; an entry with nothing to do (at
// the tip, verified, unchanged) is not taken at all.
func fillOnce(ctx context.Context, d *Deps, repoID int64) error {
	entries, err := d.Store.PoolEntries(ctx, repoID)
	if err != nil || (d.Warm <= 0 && len(entries) == 0) {
		return err
	}
	repoRow, err := d.Store.Repo(ctx, repoID)
	if err != nil {
		return err
	}
	repo, err := d.Repo(ctx, repoRow.Path)
	if err != nil {
		return err
	}
	tip, err := repo.RefCommit(ctx, "refs/heads/"+repoRow.DefaultBranch)
	if err != nil || tip == "" {
		return err
	}
	if d.Warm > 0 {
		repo.PrepareRename(ctx) // what a claim's branch rename asks git, asked now
	}
	// Never more than Warm ready: after a restart with a smaller --warm (or
	// none), the surplus goes through the gate like any worktree, before
	// anything is spent moving it.
	var ready []grove.Workspace
	for _, e := range entries {
		if len(ready) >= max(d.Warm, 0) {
			if err := d.dropEntry(ctx, repo, e); err != nil {
				return err
			}
			continue
		}
		ok := e.BaseCommit == tip && e.State == grove.WorkspacePool && d.verified(repo, e) && d.entrySetUp(ctx, repo, e)
		if !ok {
			if ok, err = d.refreshEntry(ctx, repo, e, tip); err != nil {
				return err
			}
		}
		if ok {
			ready = append(ready, e)
		}
	}
	var made []grove.Workspace
	var lastCheckout time.Time
	for n := len(ready); n < d.Warm; n++ {
		suffix := randomSuffix()
		ws := grove.Workspace{RepoID: repoID, Path: filepath.Join(filepath.Dir(d.WorktreePath(repoRow, "x")), "p-"+suffix),
			Branch: "grove/pool/" + suffix, BaseCommit: tip, State: grove.WorkspacePoolCreating}
		if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
			var err error
			ws, err = tx.PutWorkspace(ctx, ws)
			return err
		}); err != nil {
			return err
		}
		if err := repo.CreateWorktree(ctx, ws.Path, ws.Branch, tip); err != nil {
			return err
		}
		if _, err := repo.InitSubmodules(ctx, ws.Path); err != nil {
			d.Logger.Warn("pool entry: submodules not checked out; tasks that take it check them out", "path", ws.Path, "err", err)
		}
		made = append(made, ws)
		lastCheckout = time.Now()
	}
	if len(made) == 0 {
		return nil
	}
	// Files checked out in the same second as the index is written are
	// "racily clean": git would re-read every one of them at each status.
	// A status a little over a second after the last checkout rewrites
	// each index with trusted stat data; it is also the verification.
	if err := sleepCtx(ctx, time.Until(lastCheckout.Add(1100*time.Millisecond))); err != nil {
		return err
	}
	for _, ws := range made {
		ws.State = grove.WorkspacePool // created above: only verification is left
		if _, err := d.refreshEntry(ctx, repo, ws, tip); err != nil {
			return err
		}
	}
	return nil
}

// refreshEntry makes one pool entry ready at tip if it can be: a missing
// directory is (re)created when the entry was being made, else the entry is
// dropped; an entry whose cleanliness is not trusted is verified (watch,
// then a full status); a clean one behind the tip is moved forward in place
// (a checkout of the difference, never a re-creation); a dirty one, or one
// that cannot move, becomes stale (never reused: the reaper and the gate
// decide its fate). ok reports a ready entry; an entry a task claimed
// meanwhile is left alone (ok false).
func (d *Deps) refreshEntry(ctx context.Context, repo *gitops.Repo, e grove.Workspace, tip string) (ok bool, err error) {
	var taken bool
	if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		taken, err = tx.TakePoolEntry(ctx, e.ID)
		return err
	}); err != nil || !taken {
		return false, err
	}
	grove.Failpoint("pool.after-take")
	if e.State == grove.WorkspacePoolCreating {
		// A crash mid-creation (or a batch's entry not verified yet):
		// CreateWorktree finishes whatever step was cut short.
		if err := repo.CreateWorktree(ctx, e.Path, e.Branch, e.BaseCommit); err != nil {
			return false, err
		}
	} else if _, err := os.Stat(e.Path); err != nil {
		// Gone (removed by hand, or a crash mid-drop): git's record and the
		// branch go too, through the gate (a locked entry is kept, stale).
		d.forget(e.ID)
		e.State = grove.WorkspacePoolMoving // taken above
		return false, d.removePoolEntry(ctx, repo, e, "pool entry was gone")
	}
	state, base := grove.WorkspacePool, e.BaseCommit
	clean := d.verified(repo, e)
	if !clean {
		if clean, err = d.verifyClean(ctx, repo, e); err != nil {
			return false, err
		}
	}
	if !clean && e.State == grove.WorkspacePoolMoving {
		// A crash in the middle of a move: files at the tip, branch not yet.
		if done, err := repo.FinishAdvance(ctx, e.Path, e.Branch, tip); err != nil {
			return false, err
		} else if done {
			clean, base = true, tip
		}
	}
	if clean && base != tip {
		d.forget(e.ID)
		if err := repo.Advance(ctx, e.Path, e.Branch, tip); err != nil {
			d.Logger.Warn("pool entry could not be moved, not reused", "path", e.Path, "err", err)
			clean = false
		} else {
			grove.Failpoint("pool.after-advance")
			// Verified again: the move only refuses changes to the files it
			// touches, and anything else written meanwhile must be seen.
			// This is the background pass, not a task's path.
			base = tip
			if clean, err = d.verifyClean(ctx, repo, e); err != nil {
				return false, err
			}
		}
	}
	if clean {
		e.BaseCommit = base
		if clean, err = d.setUpEntry(ctx, repo, e); err != nil {
			return false, err
		}
	}
	if !clean {
		d.Logger.Warn("pool entry not reusable", "path", e.Path, "state", e.State, "base", e.BaseCommit, "tip", tip)
		d.forget(e.ID)
		state = grove.WorkspaceStale
	}
	grove.Failpoint("pool.before-return")
	err = d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.ReturnPoolEntry(ctx, e.ID, e.Branch, base, state) })
	return err == nil && state == grove.WorkspacePool, err
}

// dropEntry removes a ready pool entry the pool no longer wants, if the
// at-risk gate says it is safe; otherwise the entry becomes stale (kept,
// never reused; the reaper and the gate decide).
func (d *Deps) dropEntry(ctx context.Context, repo *gitops.Repo, e grove.Workspace) error {
	var taken bool
	if err := d.Store.InTx(ctx, func(tx *store.Tx) (err error) {
		taken, err = tx.TakePoolEntry(ctx, e.ID)
		return err
	}); err != nil || !taken {
		return err
	}
	d.forget(e.ID)
	e.State = grove.WorkspacePoolMoving // taken above
	return d.removePoolEntry(ctx, repo, e, "pool entry removed (pool smaller than before)")
}

// removePoolEntry removes pool entry e, which this pass has taken
// (pool_moving), through Remove: the gate decides; a refused entry becomes
// stale (kept, never reused; the reaper and the gate decide its fate).
func (d *Deps) removePoolEntry(ctx context.Context, repo *gitops.Repo, e grove.Workspace, why string) error {
	r := Removal{Workspace: e, RepoPath: repo.Root, Gate: gitops.GateOptions{Branch: e.Branch}, DeleteBranch: true,
		RefusedState: grove.WorkspaceStale, ReleaseTo: grove.WorkspaceStale, Event: "pool_removed", Message: why + ": " + e.Path,
		RefusedEvent: "reap_kept",
		Owner: func(_ context.Context, _ *store.Tx, ws grove.Workspace) (string, error) {
			if ws.TaskID != "" || ws.SessionID != "" || (ws.State != grove.WorkspacePoolMoving && ws.State != grove.WorkspaceRemoving) {
				return "pool entry taken meanwhile", nil
			}
			return "", nil
		}}
	res, err := d.Remove(ctx, r)
	switch {
	case errors.Is(err, grove.ErrAtRisk):
		return nil // stale, reported
	case err != nil:
		d.Logger.Warn("pool entry not removed", "path", e.Path, "err", err)
		return d.Store.InTx(ctx, func(tx *store.Tx) error {
			return tx.ReturnPoolEntry(ctx, e.ID, e.Branch, e.BaseCommit, grove.WorkspaceStale)
		})
	case res.Removed:
		d.Logger.Info(why, "path", e.Path)
	}
	return nil
}

// claimPool hands task a ready pool worktree at its base, if there is one:
// its branch is renamed to the task's and the next fill is enqueued. ok is
// false when the task must create its own worktree.
func (d *Deps) claimPool(ctx context.Context, client *Client, task grove.Task) (ws grove.Workspace, ok bool, err error) {
	if d.Warm <= 0 {
		return ws, false, nil
	}
	// An entry found dirty goes stale; the next ready one is tried.
	for range d.Warm + 1 {
		err = d.Store.InTx(ctx, func(tx *store.Tx) error {
			var err error
			ws, ok, err = tx.ClaimPoolEntry(ctx, task.RepoID, task.BaseCommit, task.ID)
			return err
		})
		if err != nil || !ok {
			return ws, false, err
		}
		if ws, ok, err = d.finishClaim(ctx, client, task, ws, false); err != nil || ok {
			return ws, ok, err
		}
	}
	return ws, false, nil
}

// finishClaim renames a claimed entry's branch; a dirty entry goes back as
// stale and the task creates its own worktree. An entry verified clean and
// unchanged since (see verifyClean) needs no status here. Safe to repeat:
// resumed says a crash may have cut an earlier call short, and only then
// does it look for a rename or a move that was done but not recorded (a
// fresh claim's entry was at rest: the hot path spends no git call on it).
func (d *Deps) finishClaim(ctx context.Context, client *Client, task grove.Task, ws grove.Workspace, resumed bool) (grove.Workspace, bool, error) {
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return ws, false, err
	}
	branch := TaskBranch(task.ID)
	if resumed && ws.Branch != branch {
		if at, err := repo.RefCommit(ctx, "refs/heads/"+branch); err != nil {
			return ws, false, err
		} else if at != "" && at == task.BaseCommit && !d.trustedClean(repo, ws) {
			// A crash after the rename, before it was recorded: the entry
			// was verified and moved before its branch was renamed.
			wts, err := repo.Worktrees(ctx)
			if err != nil {
				return ws, false, err
			}
			real, _ := filepath.EvalSymlinks(ws.Path)
			for _, w := range wts {
				if (w.Path == ws.Path || w.Path == real) && w.Branch == branch {
					// Its HEAD is on the task's branch: a rename done, or cut
					// short after moving the HEAD (the pool branch and a lock
					// may be left). Finishing it is a no-op when it is done.
					if err := repo.RenameBranch(ctx, ws.Branch, branch); err != nil {
						return ws, false, err
					}
					ws.Branch = branch
				}
			}
		}
	}
	if ws.Branch != branch {
		clean := d.trustedClean(repo, ws)
		d.forget(ws.ID) // the task changes it from now on
		if !clean {
			clean, err = repo.Clean(ctx, ws.Path)
		}
		if err == nil && !clean && resumed {
			// Resumed after a crash between a move's checkout and its
			// branch move: finish it.
			clean, err = repo.FinishAdvance(ctx, ws.Path, ws.Branch, task.BaseCommit)
		}
		if err != nil || !clean {
			d.Logger.Warn("pool entry dirty, not reused", "path", ws.Path, "err", err)
			return ws, false, d.Store.InTx(ctx, func(tx *store.Tx) error {
				return tx.ReleasePoolEntry(ctx, ws.ID, grove.WorkspaceStale)
			})
		}
		if ws.BaseCommit != task.BaseCommit {
			// An entry at another commit (the tip just moved) is moved in
			// place: only the files that differ are checked out.
			if err := repo.Advance(ctx, ws.Path, ws.Branch, task.BaseCommit); err != nil {
				d.Logger.Warn("pool entry could not be moved, not reused", "path", ws.Path, "err", err)
				return ws, false, d.Store.InTx(ctx, func(tx *store.Tx) error {
					return tx.ReleasePoolEntry(ctx, ws.ID, grove.WorkspaceStale)
				})
			}
		}
		if err := repo.RenameBranch(ctx, ws.Branch, branch); err != nil {
			return ws, false, err
		}
	}
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetWorkspaceBranch(ctx, ws.ID, branch, task.BaseCommit); err != nil {
			return err
		}
		return tx.SetWorkspaceState(ctx, ws.ID, grove.WorkspaceReady)
	})
	ws.Branch, ws.State = branch, grove.WorkspaceReady
	return ws, err == nil, err
}

func randomSuffix() string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}
