package jobs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// ApplyArgs lands a reviewed task's change on its target branch.
type ApplyArgs struct {
	TaskID string `json:"task_id"`
}

// Kind is stable: it is stored in river_job rows.
func (ApplyArgs) Kind() string { return "apply" }

// InsertOpts puts the job on the git queue.
func (ApplyArgs) InsertOpts() river.InsertOpts { return gitOpts(priorityStage) }

// ApplyWorker applies the change as one commit (merge-tree in memory, ref
// moved by compare-and-swap, main checkout updated when the target is
// checked out there), then hands off to close. A conflict ends the task in
// state conflict with the files named, worktree intact; local changes in the
// main checkout that overlap send it back to review, nothing changed.
type ApplyWorker struct {
	river.WorkerDefaults[ApplyArgs]
	d *Deps
}

// Timeout allows updating a large main checkout.
func (w *ApplyWorker) Timeout(*river.Job[ApplyArgs]) time.Duration { return 30 * time.Minute }

// enqueueApply moves a task from review to applying and inserts its apply
// job in tx with enqueue.
func enqueueApply(ctx context.Context, tx *store.Tx, id string, enqueue func(river.JobArgs) error) error {
	ok, err := tx.SetState(ctx, id, []grove.TaskState{grove.StateReview}, grove.StateApplying, "")
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("task %s is not in review: %w", id, grove.ErrConflict)
	}
	return enqueue(ApplyArgs{TaskID: id})
}

// Work checks the target before writing: Apply is a no-op when the change
// is already on it (the CAS would fail on a second run otherwise).
func (w *ApplyWorker) Work(ctx context.Context, job *river.Job[ApplyArgs]) error {
	d, id := w.d, job.Args.TaskID
	client := river.ClientFromContext[*sqlTx](ctx)
	task, ok, err := d.stageTask(ctx, id, grove.StateApplying)
	if err != nil || !ok {
		return err
	}
	change, err := d.Store.Change(ctx, id)
	if err != nil {
		return err
	}
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return w.refuse(ctx, id, err)
	}
	// Submodule commits only the task's worktree holds go into the main
	// repository's module store first, or the applied gitlinks would
	// point at nothing once the worktree is gone.
	if ws, err := d.Store.TaskWorkspace(ctx, id); err == nil && ws.State != grove.WorkspaceRemoved {
		if err := repo.KeepSubmoduleCommits(ctx, ws.Path); err != nil {
			if giveUp(err, job.Attempt, job.MaxAttempts) || errors.Is(err, grove.ErrAtRisk) {
				return w.refuse(ctx, id, err)
			}
			return err
		}
	} else if err != nil && !errors.Is(err, grove.ErrNotFound) {
		return err
	}
	msg := applyMessage(task, change)
	res, err := repo.Apply(ctx, task.TargetBranch, change.BaseCommit, change.HeadCommit, msg)
	if err != nil {
		if giveUp(err, job.Attempt, job.MaxAttempts) {
			return w.refuse(ctx, id, err)
		}
		return err
	}
	grove.Failpoint("apply.before-handoff")
	return d.Store.InTx(ctx, func(tx *store.Tx) error {
		if len(res.Conflicts) > 0 {
			msg := "conflict in " + strings.Join(res.Conflicts, ", ")
			if _, err := tx.SetState(ctx, id, []grove.TaskState{grove.StateApplying}, grove.StateConflict, msg); err != nil {
				return err
			}
			return tx.AddEvent(ctx, id, "", "conflict", msg)
		}
		ok, err := tx.SetState(ctx, id, []grove.TaskState{grove.StateApplying}, grove.StateApplied, "")
		if err != nil || !ok {
			return err
		}
		if err := tx.AddEvent(ctx, id, "", "applied", fmt.Sprintf("applied to %s as %s", task.TargetBranch, res.Commit)); err != nil {
			return err
		}
		if err := d.requestFill(client, tx, task.RepoID, res.Commit); err != nil { // the tip moved
			return err
		}
		if task.SessionID != "" {
			// The session's base moves forward: nothing is counted twice.
			if err := tx.SetSessionBase(ctx, task.SessionID, change.HeadCommit); err != nil {
				return err
			}
		}
		err = d.enqueue(ctx, client, tx, CloseArgs{TaskID: id})
		return err
	})
}

// refuse sends the task back to review with the reason; nothing changed.
func (w *ApplyWorker) refuse(ctx context.Context, id string, cause error) error {
	msg := "apply refused: " + cause.Error()
	if h := grove.HintOf(cause); h != "" {
		msg += " (" + h + ")"
	}
	err := w.d.Store.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.SetState(ctx, id, []grove.TaskState{grove.StateApplying}, grove.StateReview, msg); err != nil {
			return err
		}
		return tx.AddEvent(ctx, id, "", "apply_refused", msg)
	})
	if err != nil {
		return err
	}
	return river.JobCancel(cause)
}

func applyMessage(task grove.Task, c grove.Change) string {
	cmd := strings.Join(task.Argv, " ")
	if len(cmd) > 60 {
		cmd = cmd[:57] + "..."
	}
	return fmt.Sprintf("grove: task %s: %s\n\n%d files changed, +%d -%d\nGrove-Task: %s\n",
		task.ID, cmd, len(c.Files), c.Added, c.Deleted, task.ID)
}
