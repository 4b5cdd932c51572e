package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// Intents record what a person or script asked for and enqueue the job that
// does it, in one transaction. They work whether or not a daemon runs: the
// daemon picks the job up when it does.
type Intents struct {
	Store  *store.Store
	Client *Client // an insert-only client is enough
	Home   string
}

// SubmitRequest is what `grove submit` asks for.
type SubmitRequest struct {
	RepoDir string            // any path inside a work tree
	Base    string            // "" = the main checkout's current branch
	Argv    []string          // the agent's command
	Env     map[string]string // added to the agent's environment
	Path    string            // the submitter's PATH
	Timeout time.Duration     // 0 = none
	Apply   grove.ApplyPolicy // "" = manual
	Key     string            // idempotency key; "" = none
	Session string            // session key; "" = own worktree
}

// Submit validates req, records the task and enqueues create_worktree. With
// a Key already used, it returns that task and created=false, doing nothing.
// Bad input returns a *grove.UserError and records nothing.
func (i *Intents) Submit(ctx context.Context, req SubmitRequest) (task grove.Task, created bool, err error) {
	if len(req.Argv) == 0 {
		return task, false, grove.Userf(grove.ErrUsage, "put the agent's command after --, e.g. grove submit -- my-agent --prompt hi", "no command to run")
	}
	if req.Apply == "" {
		req.Apply = grove.ApplyManual
	}
	if req.Apply != grove.ApplyManual && req.Apply != grove.ApplyAuto {
		return task, false, grove.Userf(grove.ErrUsage, "use --apply manual or --apply auto", "unknown apply policy %q", req.Apply)
	}
	if req.Timeout < 0 {
		return task, false, grove.Userf(grove.ErrUsage, "give a positive duration, e.g. --timeout 30m", "negative timeout %s", req.Timeout)
	}
	repo, err := gitops.Open(ctx, req.RepoDir)
	if err != nil {
		return task, false, err
	}
	current, err := repo.CurrentBranch(ctx)
	if err != nil {
		return task, false, err
	}
	base, target := req.Base, ""
	if base == "" {
		if current == "" {
			base = "HEAD"
		} else {
			base = current
		}
	}
	commit, err := repo.ResolveCommit(ctx, base)
	if err != nil {
		return task, false, err
	}
	if isBranch, err := repo.IsLocalBranch(ctx, base); err != nil {
		return task, false, err
	} else if isBranch {
		target = base
	} else if current != "" {
		target = current
	} else if target, err = repo.DefaultBranch(ctx); err != nil {
		return task, false, err
	}
	task = grove.Task{ID: grove.NewTaskID(), RepoPath: repo.Root, BaseRef: base, BaseCommit: commit,
		TargetBranch: target, Argv: req.Argv, Env: req.Env, Path: req.Path, Timeout: req.Timeout,
		Apply: req.Apply, IdemKey: req.Key, SessionID: req.Session, State: grove.StateQueued}
	err = i.Store.InTx(ctx, func(tx *store.Tx) error {
		task.RepoID, err = tx.UpsertRepo(ctx, grove.Repo{Path: repo.Root, CommonDir: repo.CommonDir, DefaultBranch: target})
		if err != nil {
			return err
		}
		task, created, err = tx.InsertTask(ctx, task)
		if err != nil || !created {
			return err
		}
		if err := tx.AddEvent(ctx, task.ID, "", "submitted", fmt.Sprintf("base %s (%.12s), target %s", base, commit, target)); err != nil {
			return err
		}
		_, err = i.Client.InsertTx(ctx, tx.SQL(), CreateWorktreeArgs{TaskID: task.ID, Attempt: 1}, nil)
		return err
	})
	return task, created, err
}

// Apply asks for a task in review to be applied.
func (i *Intents) Apply(ctx context.Context, id string) error {
	return i.Store.InTx(ctx, func(tx *store.Tx) error {
		task, err := tx.Task(ctx, id)
		if err != nil {
			return err
		}
		if task.State != grove.StateReview {
			return stateError(task, "apply", grove.StateReview)
		}
		if err := tx.AddEvent(ctx, id, "", "apply_asked", ""); err != nil {
			return err
		}
		return enqueueApply(ctx, i.Client, tx, id)
	})
}

// Discard drops a task's change (it stays at refs/grove/tasks/<id>) and
// enqueues its close.
func (i *Intents) Discard(ctx context.Context, id string) error {
	return i.Store.InTx(ctx, func(tx *store.Tx) error {
		task, err := tx.Task(ctx, id)
		if err != nil {
			return err
		}
		ok, err := tx.SetState(ctx, id, []grove.TaskState{grove.StateReview, grove.StateConflict}, grove.StateDiscarded, "")
		if err != nil {
			return err
		}
		if !ok {
			return stateError(task, "discard", grove.StateReview, grove.StateConflict)
		}
		if err := tx.AddEvent(ctx, id, "", "discarded", "change kept at "+TaskRef(id)); err != nil {
			return err
		}
		_, err = i.Client.InsertTx(ctx, tx.SQL(), CloseArgs{TaskID: id}, nil)
		return err
	})
}

// Cancel stops a task that has not settled: a queued one at once, a running
// one by signalling its supervisor (TERM to the agent's group, grace, KILL).
// The daemon also forwards a recorded cancel, so it works from any process.
func (i *Intents) Cancel(ctx context.Context, id string, runDir string) error {
	var task grove.Task
	err := i.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		task, err = tx.Task(ctx, id)
		if err != nil {
			return err
		}
		if !in(task.State, grove.StateQueued, grove.StatePreparing, grove.StateRunning) {
			return stateError(task, "cancel", grove.StateQueued, grove.StatePreparing, grove.StateRunning)
		}
		if err := tx.AskCancel(ctx, id); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, id, "", "cancel_asked", ""); err != nil {
			return err
		}
		if task.State == grove.StateQueued {
			if _, err := tx.SetState(ctx, id, []grove.TaskState{grove.StateQueued}, grove.StateCanceled, "canceled"); err != nil {
				return err
			}
			_, err = i.Client.InsertTx(ctx, tx.SQL(), CloseArgs{TaskID: id}, nil)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if task.State == grove.StateRunning {
		if err := SignalRun(runDir, syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("signal agent of task %s: %w", id, err)
		}
	}
	return nil
}

// Close asks for a finished task's worktree to be removed (through the gate;
// Force snapshots first).
func (i *Intents) Close(ctx context.Context, id string, force bool) error {
	return i.Store.InTx(ctx, func(tx *store.Tx) error {
		task, err := tx.Task(ctx, id)
		if err != nil {
			return err
		}
		if !in(task.State, closable...) {
			return stateError(task, "close", closable...)
		}
		if err := tx.AddEvent(ctx, id, "", "close_asked", fmt.Sprintf("force=%v", force)); err != nil {
			return err
		}
		_, err = i.Client.InsertTx(ctx, tx.SQL(), CloseArgs{TaskID: id, Force: force}, nil)
		return err
	})
}

// Retry runs a failed or canceled task again as a new attempt.
func (i *Intents) Retry(ctx context.Context, id string) error {
	return i.Store.InTx(ctx, func(tx *store.Tx) error {
		task, err := tx.Task(ctx, id)
		if err != nil {
			return err
		}
		if !in(task.State, grove.StateFailed, grove.StateCanceled) {
			return stateError(task, "retry", grove.StateFailed, grove.StateCanceled)
		}
		if err := tx.Retry(ctx, id); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, id, "", "retry", fmt.Sprintf("attempt %d", task.Attempt+1)); err != nil {
			return err
		}
		_, err = i.Client.InsertTx(ctx, tx.SQL(), CreateWorktreeArgs{TaskID: id, Attempt: task.Attempt + 1}, nil)
		return err
	})
}


func stateError(task grove.Task, verb string, want ...grove.TaskState) error {
	hint := "see its state with: grove show " + task.ID
	switch {
	case verb == "apply" && task.State == grove.StateRunning:
		hint = "wait for it first: grove wait " + task.ID
	case verb == "cancel" && task.State == grove.StateReview:
		hint = "to drop its change: grove discard " + task.ID
	}
	return grove.Userf(grove.ErrConflict, hint, "cannot %s task %s: it is %s (needs %v)", verb, task.ID, task.State, want)
}
