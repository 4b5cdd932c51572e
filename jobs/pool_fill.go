package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// PoolFillArgs tops up a repository's warm pool and moves its clean
// entries forward to the default branch's tip.
type PoolFillArgs struct {
	RepoID int64 `json:"repo_id"`
	// Tip is the commit that asked for this pass (a new tip after an
	// apply); it makes the job distinct from a pass already running, which
	// may have read the old tip.
	Tip string `json:"tip,omitempty"`
}

// Kind is stable: it is stored in river_job rows.
func (PoolFillArgs) Kind() string { return "pool_fill" }

// InsertOpts puts the job on the git queue, one waiting per repository.
func (PoolFillArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueGit, MaxAttempts: 3, Priority: priorityPool, UniqueOpts: river.UniqueOpts{
		ByArgs:  true,
		ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning, rivertype.JobStateScheduled, rivertype.JobStateRetryable},
	}}
}

// PoolFillWorker keeps up to Deps.Warm checked-out worktrees per
// repository at the tip of its default branch.
type PoolFillWorker struct {
	river.WorkerDefaults[PoolFillArgs]
	d *Deps
}

// requestFill enqueues a pool pass for a repository whose tip is (or just
// became) tip, in tx; a no-op without a pool.
func (d *Deps) requestFill(ctx context.Context, client *Client, tx *store.Tx, repoID int64, tip string) error {
	if d.Warm <= 0 {
		return nil
	}
	_, err := client.InsertTx(ctx, tx.SQL(), PoolFillArgs{RepoID: repoID, Tip: tip}, nil)
	return err
}

// fillLock is the in-process lock of a repository's pool passes.
func (d *Deps) fillLock(repoID int64) *sync.Mutex {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fills == nil {
		d.fills = map[int64]*sync.Mutex{}
	}
	if d.fills[repoID] == nil {
		d.fills[repoID] = &sync.Mutex{}
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
	if d.Warm <= 0 {
		return nil
	}
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
	// One pass at a time per repository (one daemon per home); a claim or a
	// tip move that happens while a pass runs is caught by running again
	// until stable.
	mu := d.fillLock(repoID)
	mu.Lock()
	defer mu.Unlock()
	for range 5 {
		settled, err := fillOnce(ctx, d, repoID)
		if err != nil || settled {
			return err
		}
	}
	return nil
}

// fillOnce is one pass; settled reports that the pool was already full and
// at the tip, so no further pass is needed.
func fillOnce(ctx context.Context, d *Deps, repoID int64) (settled bool, err error) {
	repoRow, err := d.Store.Repo(ctx, repoID)
	if err != nil {
		return false, err
	}
	repo, err := d.Repo(ctx, repoRow.Path)
	if err != nil {
		return false, err
	}
	tip, err := repo.RefCommit(ctx, "refs/heads/"+repoRow.DefaultBranch)
	if err != nil || tip == "" {
		return true, err
	}
	entries, err := d.Store.PoolEntries(ctx, repoID)
	if err != nil {
		return false, err
	}
	settled = true
	ready := 0
	for _, e := range entries {
		if _, err := os.Stat(e.Path); err != nil {
			if e.State == grove.WorkspacePoolCreating {
				// A crash mid-creation: finish it below.
				if err := repo.CreateWorktree(ctx, e.Path, e.Branch, e.BaseCommit); err != nil {
					return false, err
				}
			} else {
				if err := d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.ArchiveWorkspace(ctx, e.ID) }); err != nil {
					return false, err
				}
				continue
			}
		}
		state := grove.WorkspacePool
		if e.BaseCommit != tip || e.State != grove.WorkspacePool {
			settled = false
		}
		if e.BaseCommit != tip {
			clean, err := repo.Clean(ctx, e.Path)
			if err != nil {
				return false, err
			}
			if clean {
				err = repo.Advance(ctx, e.Path, e.Branch, e.BaseCommit, tip)
			}
			if !clean || err != nil {
				d.Logger.Warn("pool entry not reusable", "path", e.Path, "clean", clean, "err", err)
				state = grove.WorkspaceStale
			}
		}
		err = d.Store.InTx(ctx, func(tx *store.Tx) error {
			if state == grove.WorkspacePool {
				if err := tx.SetWorkspaceBranch(ctx, e.ID, e.Branch, tip); err != nil {
					return err
				}
			}
			return tx.SetWorkspaceState(ctx, e.ID, state)
		})
		if err != nil {
			return false, err
		}
		if state == grove.WorkspacePool {
			ready++
		}
	}
	if ready < d.Warm {
		settled = false
	}
	for ; ready < d.Warm; ready++ {
		suffix := randomSuffix()
		ws := grove.Workspace{RepoID: repoID, Path: filepath.Join(filepath.Dir(d.WorktreePath(repoRow, "x")), "p-"+suffix),
			Branch: "grove/pool/" + suffix, BaseCommit: tip, State: grove.WorkspacePoolCreating}
		if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
			var err error
			ws, err = tx.PutWorkspace(ctx, ws)
			return err
		}); err != nil {
			return false, err
		}
		if err := repo.CreateWorktree(ctx, ws.Path, ws.Branch, tip); err != nil {
			return false, err
		}
		if err := primeIndex(ctx, repo, ws.Path, time.Now()); err != nil {
			return false, err
		}
		if err := d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.SetWorkspaceState(ctx, ws.ID, grove.WorkspacePool) }); err != nil {
			return false, err
		}
	}
	return settled, nil
}

// primeIndex makes the cleanliness check of a fresh pool entry cheap: files
// checked out in the same second as the index is written are "racily
// clean", and git would re-read all of them at every status. A status a
// little over a second after the checkout rewrites the index with trusted
// stat data (and its untracked cache). This runs in the background pass,
// never on a task's path.
func primeIndex(ctx context.Context, repo *gitops.Repo, path string, checkedOut time.Time) error {
	if err := sleepCtx(ctx, time.Until(checkedOut.Add(1100*time.Millisecond))); err != nil {
		return err
	}
	_, err := repo.Clean(ctx, path)
	return err
}

// claimPool hands task a ready pool worktree at its base, if there is one:
// its branch is renamed to the task's and the next fill is enqueued. ok is
// false when the task must create its own worktree.
func (d *Deps) claimPool(ctx context.Context, client *Client, task grove.Task) (ws grove.Workspace, ok bool, err error) {
	if d.Warm <= 0 {
		return ws, false, nil
	}
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		ws, ok, err = tx.ClaimPoolEntry(ctx, task.RepoID, task.BaseCommit, task.ID)
		return err
	})
	if err != nil || !ok {
		return ws, false, err
	}
	return d.finishClaim(ctx, client, task, ws)
}

// finishClaim renames a claimed entry's branch; a dirty entry goes back as
// stale and the task creates its own worktree. Safe to repeat.
func (d *Deps) finishClaim(ctx context.Context, client *Client, task grove.Task, ws grove.Workspace) (grove.Workspace, bool, error) {
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return ws, false, err
	}
	branch := TaskBranch(task.ID)
	if ws.Branch != branch {
		clean, err := repo.Clean(ctx, ws.Path)
		if err != nil || !clean {
			d.Logger.Warn("pool entry dirty, not reused", "path", ws.Path, "err", err)
			return ws, false, d.Store.InTx(ctx, func(tx *store.Tx) error {
				return tx.ReleasePoolEntry(ctx, ws.ID, grove.WorkspaceStale)
			})
		}
		if ws.BaseCommit != task.BaseCommit {
			// An entry at another commit (the tip just moved) is moved in
			// place: only the files that differ are checked out.
			if err := repo.Advance(ctx, ws.Path, ws.Branch, ws.BaseCommit, task.BaseCommit); err != nil {
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
