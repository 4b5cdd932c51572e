package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// DiffArgs turns what a task's agent left in its worktree into a commit and
// a recorded change.
type DiffArgs struct {
	TaskID string `json:"task_id"`
}

// Kind is stable: it is stored in river_job rows.
func (DiffArgs) Kind() string { return "diff" }

// InsertOpts puts the job on the git queue.
func (DiffArgs) InsertOpts() river.InsertOpts { return gitOpts(priorityStage) }

// DiffWorker commits everything in the worktree (hooks off), keeps the
// result reachable at refs/grove/tasks/<id>, records the change and moves the
// task to review, or on to apply under --apply auto when the agent exited 0.
type DiffWorker struct {
	river.WorkerDefaults[DiffArgs]
	d *Deps
}

// Timeout allows `git add -A` on a large tree.
func (w *DiffWorker) Timeout(*river.Job[DiffArgs]) time.Duration { return 30 * time.Minute }

// Work is idempotent: committing a clean worktree is a no-op and the change
// row is replaced.
func (w *DiffWorker) Work(ctx context.Context, job *river.Job[DiffArgs]) error {
	d, id := w.d, job.Args.TaskID
	client := river.ClientFromContext[*sqlTx](ctx)
	task, ok, err := d.stageTask(ctx, id, grove.StateDiffing)
	if err != nil || !ok {
		return err
	}
	ws, err := d.Store.TaskWorkspace(ctx, id)
	if err != nil {
		return err
	}
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "open repository", err)
	}
	// A session task that started on changes made outside tasks: they
	// become their own commit under the agent's (see commitSessionStart).
	held := ""
	if task.SessionID != "" {
		if held, err = d.commitSessionStart(ctx, repo, task, ws); err != nil {
			return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "keep the session's own changes apart", err)
		}
	}
	head, err := repo.CommitAll(ctx, ws.Path, fmt.Sprintf("grove task %s", id))
	if err != nil {
		return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "commit agent's work", err)
	}
	grove.Failpoint("diff.after-commit")
	// The task's base, not the workspace's: a session task's base is the
	// session worktree's HEAD when it started.
	files, err := repo.DiffStat(ctx, task.BaseCommit, head)
	if err != nil {
		return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "diff", err)
	}
	if err := repo.SetRef(ctx, TaskRef(id), head); err != nil {
		return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "keep task ref", err)
	}
	change := grove.Change{TaskID: id, BaseCommit: task.BaseCommit, HeadCommit: head, Files: files}
	for _, f := range files {
		change.Added += max(f.Added, 0)
		change.Deleted += max(f.Deleted, 0)
	}
	return d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.PutChange(ctx, change); err != nil {
			return err
		}
		if err := tx.SetWorkspaceHead(ctx, ws.ID, head); err != nil {
			return err
		}
		if task.SessionID != "" {
			if err := tx.NoteActivity(ctx, task.SessionID, "task "+id); err != nil {
				return err
			}
			if held != "" { // never counted applied: see store.SetSessionBase
				if err := tx.HoldSessionBase(ctx, task.SessionID, held); err != nil {
					return err
				}
			}
		}
		ok, err := tx.SetState(ctx, id, []grove.TaskState{grove.StateDiffing}, grove.StateReview, "")
		if err != nil || !ok {
			return err
		}
		msg := fmt.Sprintf("%d files changed, +%d -%d", len(files), change.Added, change.Deleted)
		if err := tx.AddEvent(ctx, id, "", "diff", msg); err != nil {
			return err
		}
		if task.Apply == grove.ApplyAuto && task.ExitCode != nil && *task.ExitCode == 0 {
			return enqueueApply(ctx, tx, id, func(a river.JobArgs) error { return w.d.enqueue(ctx, client, tx, a) })
		}
		return nil
	})
}
