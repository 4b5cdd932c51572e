package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
}

// Kind is stable: it is stored in river_job rows.
func (CloseArgs) Kind() string { return "close" }

// InsertOpts puts the job on the cleanup queue.
func (CloseArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueCleanup, MaxAttempts: stageAttempts}
}

// CloseWorker removes the worktree when the gate says safe (or after a
// snapshot with Force), archives the workspace row, and moves an applied,
// discarded, reviewed or conflicting task to closed. Failed and canceled
// tasks keep their state. A refusal is recorded on the workspace (reasons as
// JSON) and in the events; the worktree stays.
type CloseWorker struct {
	river.WorkerDefaults[CloseArgs]
	d *Deps
}

// Timeout allows removing a large worktree.
func (w *CloseWorker) Timeout(*river.Job[CloseArgs]) time.Duration { return 30 * time.Minute }

// closable are the states a close may start from (the state machine's
// settled states).
var closable = grove.ClosableStates()

// Work is idempotent: RemoveWorktree tolerates a worktree already gone.
func (w *CloseWorker) Work(ctx context.Context, job *river.Job[CloseArgs]) error {
	d, id := w.d, job.Args.TaskID
	task, ok, err := d.stageTask(ctx, id, closable...)
	if err != nil || !ok {
		return err
	}
	ws, err := d.Store.TaskWorkspace(ctx, id)
	if errors.Is(err, grove.ErrNotFound) {
		return w.markClosed(ctx, task, 0, "")
	}
	if err != nil {
		return err
	}
	if ws.State == grove.WorkspaceRemoved || task.SessionID != "" {
		// A session's worktree outlives its tasks: grove session close.
		return w.markClosed(ctx, task, 0, "")
	}
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return err
	}
	gate := GateOptions(task, ws)
	gate.RefreshIndex = true // about to go: RetireWorktree's re-check is then cheap
	report := repo.AtRisk(ctx, ws.Path, gate)
	snapshot := ""
	if !report.Safe && !alreadyGone(report) {
		if !job.Args.Force {
			return w.recordRefusal(ctx, task, ws, report)
		}
		snapshot = SnapshotRef(id)
		if _, err := repo.Snapshot(ctx, ws.Path, snapshot, false); err != nil {
			return fmt.Errorf("snapshot before forced close: %w", err)
		}
	}
	// The task must still be closable (a retry may have taken it back since
	// the gate ran), and the workspace is marked so no retry starts in it
	// while it goes.
	var still bool
	if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		cur, err := tx.Task(ctx, id)
		if err != nil || !in(cur.State, closable...) || cur.Attempt != task.Attempt {
			return err
		}
		if ws.State == grove.WorkspaceRemoving {
			still = true // a close that a crash interrupted
			return nil
		}
		still, err = tx.SwapWorkspaceState(ctx, ws.ID, ws.State, grove.WorkspaceRemoving)
		return err
	}); err != nil || !still {
		return err
	}
	if err := repo.RetireWorktree(ctx, ws.Path, ws.Branch, d.TrashDir(), report); err != nil {
		if rerr := d.Store.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.SwapWorkspaceState(ctx, ws.ID, grove.WorkspaceRemoving, grove.WorkspaceReady)
			return err
		}); rerr != nil {
			err = fmt.Errorf("%w; and: %v", err, rerr)
		}
		if errors.Is(err, grove.ErrAtRisk) {
			// Work appeared after the gate ran: kept, and said so.
			return w.recordRefusal(ctx, task, ws, repo.AtRisk(ctx, ws.Path, GateOptions(task, ws)))
		}
		return fmt.Errorf("remove worktree: %w", err)
	}
	return w.markClosed(ctx, task, ws.ID, snapshot)
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

func (w *CloseWorker) recordRefusal(ctx context.Context, task grove.Task, ws grove.Workspace, report gitops.Report) error {
	var reasons []string
	for _, r := range report.Risks {
		reasons = append(reasons, r.Reason)
	}
	msg := "worktree kept, at risk: " + strings.Join(reasons, ", ")
	w.d.Logger.Warn("close refused", "task", task.ID, "path", ws.Path, "reasons", reasons)
	return w.d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetWorkspaceRisk(ctx, ws.ID, reportJSON(report)); err != nil {
			return err
		}
		return tx.AddEvent(ctx, task.ID, "", "close_refused", msg)
	})
}

func (w *CloseWorker) markClosed(ctx context.Context, task grove.Task, wsID int64, snapshot string) error {
	return w.d.Store.InTx(ctx, func(tx *store.Tx) error {
		if wsID != 0 {
			if snapshot != "" {
				if err := tx.SetWorkspaceSnapshot(ctx, wsID, snapshot); err != nil {
					return err
				}
			}
			if err := tx.SetWorkspaceRisk(ctx, wsID, ""); err != nil {
				return err
			}
			if err := tx.ArchiveWorkspace(ctx, wsID); err != nil {
				return err
			}
		}
		if in(task.State, grove.StateApplied, grove.StateDiscarded, grove.StateReview, grove.StateConflict) {
			if _, err := tx.SetState(ctx, task.ID, []grove.TaskState{task.State}, grove.StateClosed, ""); err != nil {
				return err
			}
		}
		msg := "worktree removed"
		if snapshot != "" {
			msg += "; snapshot at " + snapshot
		}
		return tx.AddEvent(ctx, task.ID, "", "closed", msg)
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
