package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// CloseArgs removes a finished task's worktree and branch, through the
// at-risk gate. Force snapshots an at-risk worktree first.
type CloseArgs struct {
	TaskID string `json:"task_id"`
	Force  bool   `json:"force,omitempty"`
	// DropIgnored leaves ignored files out of Force's snapshot.
	DropIgnored bool `json:"drop_ignored,omitempty"`
}

// Kind is stable: it is stored in river_job rows.
func (CloseArgs) Kind() string { return "close" }

// InsertOpts puts the job on the cleanup queue.
func (CloseArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueCleanup, MaxAttempts: stageAttempts}
}

// CloseWorker removes a task's worktree through Remove (the gate, a
// snapshot first with Force), archives the workspace row, and moves a
// reviewed or conflicting task to closed. Applied, discarded, failed and
// canceled tasks keep their state (the workspace says removed). Every run ends with one event the CLI
// waits for: closed, close_refused (the reasons are on the workspace row),
// close_skipped (the task changed meanwhile) or close_failed (the last
// attempt failed; close_error for an attempt River retries).
type CloseWorker struct {
	river.WorkerDefaults[CloseArgs]
	d *Deps
}

// Timeout allows removing a large worktree.
func (w *CloseWorker) Timeout(*river.Job[CloseArgs]) time.Duration { return 30 * time.Minute }

// closable are the states a close may start from (the state machine's
// settled states).
var closable = grove.ClosableStates()

// Work is idempotent: Remove resumes a removal a crash cut short, and a
// worktree already gone is only forgotten.
func (w *CloseWorker) Work(ctx context.Context, job *river.Job[CloseArgs]) error {
	err := w.work(ctx, job)
	if err == nil || errors.Is(err, grove.ErrAtRisk) {
		return nil // a refusal is an answer, recorded
	}
	final := giveUp(err, job.Attempt, job.MaxAttempts)
	kind := "close_error"
	if final {
		kind = "close_failed"
	}
	if rerr := w.d.Store.AddEvent(ctx, job.Args.TaskID, "", kind, err.Error()); rerr != nil {
		w.d.Logger.Warn("cannot record close error", "task", job.Args.TaskID, "err", rerr)
	}
	if final {
		return river.JobCancel(err) // the answer was given: no attempt after it
	}
	return err
}

func (w *CloseWorker) work(ctx context.Context, job *river.Job[CloseArgs]) error {
	d, id := w.d, job.Args.TaskID
	task, ok, err := d.stageTask(ctx, id, closable...)
	if err != nil {
		return err
	}
	if !ok {
		return d.Store.AddEvent(ctx, id, "", "close_skipped", fmt.Sprintf("task is %s", task.State))
	}
	ws, err := d.Store.TaskWorkspace(ctx, id)
	if errors.Is(err, grove.ErrNotFound) {
		return w.markClosed(ctx, task)
	}
	if err != nil {
		return err
	}
	if ws.State == grove.WorkspaceRemoved || task.SessionID != "" {
		// A session's worktree outlives its tasks: grove session close.
		return w.markClosed(ctx, task)
	}
	r := d.removalOf(store.OwnedWorkspace{Workspace: ws, RepoPath: task.RepoPath, TaskState: task.State}, closable)
	r.Gate = GateOptions(task, ws)
	r.Force, r.DropIgnored, r.Wait = job.Args.Force, job.Args.DropIgnored, true
	attempt := task.Attempt
	r.Owner = func(ctx context.Context, tx *store.Tx, _ grove.Workspace) (string, error) {
		// A retry may have taken the task back since this job was queued.
		cur, err := tx.Task(ctx, id)
		if err != nil {
			return "", err
		}
		if !in(cur.State, closable...) || cur.Attempt != attempt {
			return fmt.Sprintf("task is %s (attempt %d)", cur.State, cur.Attempt), nil
		}
		return "", nil
	}
	r.Event, r.Message, r.RefusedEvent = "closed", "worktree removed", "close_refused"
	res, err := d.Remove(ctx, r)
	switch {
	case err != nil:
		return err
	case res.Skipped == SkipGone:
		return w.markClosed(ctx, task) // another remover (the reaper) took it away
	case res.Skipped != "":
		return d.Store.AddEvent(ctx, id, "", "close_skipped", res.Skipped)
	}
	return nil
}

// alreadyGone reports whether the worktree directory is gone and nothing
// else is at risk (a crash after the directory was removed): removal then
// only prunes git's metadata and deletes the branch.
func alreadyGone(rep gitops.Report) bool {
	return len(rep.Risks) == 1 && rep.Has(gitops.RiskMissing)
}

// GateOptions are the at-risk gate's options for a task's workspace: its
// commits count as kept once the task was applied or discarded (the task ref
// holds them).
func GateOptions(task grove.Task, ws grove.Workspace) gitops.GateOptions {
	opt := gitops.GateOptions{Branch: ws.Branch}
	if in(task.State, grove.StateApplied, grove.StateDiscarded, grove.StateClosed, grove.StateFailed, grove.StateCanceled) {
		opt.AppliedRefs = []string{TaskRef(task.ID)}
	}
	return opt
}

// markClosed closes a task that has no worktree left to remove.
func (w *CloseWorker) markClosed(ctx context.Context, task grove.Task) error {
	return w.d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := closeTaskTx(ctx, tx, task.ID); err != nil {
			return err
		}
		return tx.AddEvent(ctx, task.ID, "", "closed", "no worktree to remove")
	})
}

// reportJSON is the gate report as stored on a workspace.
func reportJSON(rep gitops.Report) string {
	b, err := json.Marshal(rep)
	if err != nil {
		return fmt.Sprintf(`{"error": %q}`, err.Error())
	}
	return string(b)
}
