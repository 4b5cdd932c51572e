package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// CreateWorktreeArgs starts a task: a worktree on its own branch at the
// task's base commit.
type CreateWorktreeArgs struct {
	TaskID  string `json:"task_id"`
	Attempt int    `json:"attempt"`
}

// Kind is stable: it is stored in river_job rows.
func (CreateWorktreeArgs) Kind() string { return "create_worktree" }

// InsertOpts puts the job on the git queue.
func (CreateWorktreeArgs) InsertOpts() river.InsertOpts { return gitOpts(priorityStart) }

// CreateWorktreeWorker creates the task's worktree and hands off to run_agent.
type CreateWorktreeWorker struct {
	river.WorkerDefaults[CreateWorktreeArgs]
	d *Deps
}

// Timeout allows a large checkout.
func (w *CreateWorktreeWorker) Timeout(*river.Job[CreateWorktreeArgs]) time.Duration {
	return 30 * time.Minute
}

// Work is idempotent: a branch or worktree left by an earlier attempt is
// reused (gitops.CreateWorktree checks both before creating).
func (w *CreateWorktreeWorker) Work(ctx context.Context, job *river.Job[CreateWorktreeArgs]) error {
	d, id := w.d, job.Args.TaskID
	client := river.ClientFromContext[*sqlTx](ctx)
	task, ok, err := d.stageTask(ctx, id, grove.StateQueued, grove.StatePreparing)
	if err != nil || !ok || task.Attempt != job.Args.Attempt {
		return err
	}
	if task.SessionID != "" {
		return w.attach(ctx, client, task, job.Attempt, job.MaxAttempts)
	}
	if task, err = d.resolveRemoteBase(ctx, task); err != nil { // submitted from another host
		return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "resolve base", err)
	}
	// A warm worktree at the task's base skips the checkout entirely.
	if ws, ok, err := w.warmStart(ctx, client, task); err != nil {
		return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "take warm worktree", err)
	} else if ok {
		d.Logger.Info("worktree ready (warm)", "task", id, "path", ws.Path)
		return w.handOff(ctx, client, task, ws, job.Attempt, job.MaxAttempts)
	}
	repoRow, err := d.Store.Repo(ctx, task.RepoID)
	if err != nil {
		return err
	}
	ws := grove.Workspace{RepoID: task.RepoID, TaskID: id, Path: d.WorktreePath(repoRow, id),
		Branch: TaskBranch(id), BaseCommit: task.BaseCommit, State: grove.WorkspaceCreating}
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.SetState(ctx, id, []grove.TaskState{grove.StateQueued}, grove.StatePreparing, ""); err != nil {
			return err
		}
		ws, err = tx.PutWorkspace(ctx, ws)
		return err
	})
	if err != nil {
		return err
	}
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "open repository", err)
	}
	start := time.Now()
	if err := repo.CreateWorktree(ctx, ws.Path, ws.Branch, task.BaseCommit); err != nil {
		return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "create worktree", err)
	}
	grove.Failpoint("create.after-worktree")
	d.Logger.Info("worktree ready", "task", id, "path", ws.Path, "took", time.Since(start).Round(time.Millisecond))
	return w.handOff(ctx, client, task, ws, job.Attempt, job.MaxAttempts)
}

// warmStart takes a warm-pool worktree for the task, or resumes taking one
// after a crash.
func (w *CreateWorktreeWorker) warmStart(ctx context.Context, client *Client, task grove.Task) (grove.Workspace, bool, error) {
	d := w.d
	ws, err := d.Store.TaskWorkspace(ctx, task.ID)
	switch {
	case err == nil && ws.State == grove.WorkspaceClaiming:
		return d.finishClaim(ctx, client, task, ws, true)
	case err == nil && ws.State == grove.WorkspaceReady && (ws.Branch == TaskBranch(task.ID) || ws.Branch == oldTaskBranch(task.ID)):
		// Its worktree is there: a crash after the claim, or a retry of a
		// task whose worktree was kept. The task must be preparing for the
		// hand-off to insert run_agent (a retry leaves it queued).
		return ws, true, d.Store.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.SetState(ctx, task.ID, []grove.TaskState{grove.StateQueued}, grove.StatePreparing, "")
			return err
		})
	case err == nil:
		return ws, false, nil // its own worktree, being created
	case !errors.Is(err, grove.ErrNotFound):
		return ws, false, err
	}
	if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.SetState(ctx, task.ID, []grove.TaskState{grove.StateQueued}, grove.StatePreparing, "")
		return err
	}); err != nil {
		return ws, false, err
	}
	return d.claimPool(ctx, client, task)
}

// handOff records the worktree ready and inserts setup, or run_agent when
// the worktree has nothing to prepare or was set up under the same
// settings and inputs already (a warm-pool entry), unless the task was
// canceled meanwhile.
func (w *CreateWorktreeWorker) handOff(ctx context.Context, client *Client, task grove.Task, ws grove.Workspace, attempt, maxAttempts int) error {
	d, id := w.d, task.ID
	var (
		setup   bool
		timeout time.Duration
	)
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return d.stageError(ctx, client, id, attempt, maxAttempts, "open repository", err)
	}
	// Submodules come from the main repository's local copies (no
	// network); a warm entry's are already there (a stat each).
	if subs, err := repo.InitSubmodules(ctx, ws.Path); err != nil {
		return d.stageError(ctx, client, id, attempt, maxAttempts, "initialise submodules", err)
	} else if len(subs) > 0 {
		d.Logger.Info("submodules checked out from local copies", "task", id, "paths", subs)
	}
	if s, key, err := d.settingsAt(ctx, repo, task.BaseCommit); err != nil {
		return d.stageError(ctx, client, id, attempt, maxAttempts, "read settings", err)
	} else if key != "" && key != ws.SetupKey {
		setup, timeout = true, time.Duration(len(s.Setup))*s.Timeout()
	} else if key != "" {
		d.Logger.Info("worktree already set up", "task", id, "path", ws.Path)
	}
	grove.Failpoint("create.before-handoff")
	// The agent starts from here when it can (early_start.go): the first
	// attempt of both the task and this job, no setup, not in a session.
	early := !setup && task.SessionID == "" && task.Attempt == 1 && attempt == 1 && d.reserveEarlyStart(id)
	toAgent := false
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetWorkspaceState(ctx, ws.ID, grove.WorkspaceReady); err != nil {
			return err
		}
		cur, err := tx.Task(ctx, id)
		if err != nil {
			return err
		}
		if cur.CancelAsked || cur.State != grove.StatePreparing {
			// Canceled while we worked: the close job cleans up.
			if _, err := tx.SetState(ctx, id, []grove.TaskState{grove.StatePreparing}, grove.StateCanceled, "canceled"); err != nil {
				return err
			}
			err = d.enqueue(ctx, client, tx, CloseArgs{TaskID: id})
			return err
		}
		if err := tx.AddEvent(ctx, id, "", "worktree", "worktree ready at "+ws.Path); err != nil {
			return err
		}
		// run_agent (or setup) first: its queue is woken first after the commit.
		var next river.JobArgs = RunAgentArgs{TaskID: id, Attempt: task.Attempt, Timeout: task.Timeout}
		if setup {
			next = SetupArgs{TaskID: id, Attempt: task.Attempt, Timeout: timeout}
		}
		// An early start never passes a job already waiting for an agent
		// slot, and wakes run_agent's queue once the agent runs (its fetch
		// would only compete with the start for the CPU).
		if early && !setup {
			waiting, err := tx.QueueWaiting(ctx, d.agentQueue())
			if err != nil {
				return err
			}
			if waiting {
				d.dropEarlyStart(id)
				early = false
			}
		}
		enqueue := d.enqueue
		if early && !setup {
			enqueue = d.enqueueQuietly
		}
		if err := enqueue(ctx, client, tx, next); err != nil {
			return err
		}
		toAgent = !setup
		return d.requestFill(client, tx, task.RepoID, task.BaseCommit)
	})
	if early {
		if err == nil && toAgent {
			d.startEarly(ctx, task)
			d.wakeQueues()
		} else {
			d.dropEarlyStart(id)
		}
	}
	return err
}

// attach starts a session's task in the session's worktree: once the
// session's worktree is ready and every task submitted before this one has
// settled (tasks of a session run one at a time, in order). The task's
// start point is the worktree as it is now, recorded without touching it
// (gitops.StateOf: HEAD plus every tracked and untracked, not ignored,
// file): its diff is its end state against that point, so it never holds
// an earlier task's work nor changes made in the session between tasks
// (those are kept at refs/grove/starts/<id> and named in a session_pending
// event). A session whose service is down (evicted, dead, failed) has it
// started again; if that fails the task still runs, with an event saying
// why the service is not there.
func (w *CreateWorktreeWorker) attach(ctx context.Context, client *Client, task grove.Task, attempt, maxAttempts int) error {
	d, id := w.d, task.ID
	var (
		sess  grove.Session
		ws    grove.Workspace
		wait  bool
		ended bool
	)
	err := d.Store.Read(ctx, func(tx *store.Tx) error {
		var err error
		if sess, err = tx.Session(ctx, task.SessionID); err != nil {
			return err
		}
		if sess.State == grove.SessionClosed {
			ended = true
			return nil
		}
		ws, err = tx.SessionWorkspace(ctx, sess.ID)
		if errors.Is(err, grove.ErrNotFound) || (err == nil && ws.State != grove.WorkspaceReady) {
			wait = true
			return nil
		}
		if err != nil {
			return err
		}
		wait, err = tx.SessionBusy(ctx, sess.ID, id, true)
		return err
	})
	if err != nil {
		return err
	}
	if ended {
		return d.stageError(ctx, client, id, 1, 1, "start in session", grove.Userf(grove.ErrConflict, "", "session %s is closed", task.SessionID))
	}
	if wait {
		return river.JobSnooze(200 * time.Millisecond)
	}
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return err
	}
	start, err := d.sessionStart(ctx, repo, sess, ws, id)
	if err != nil {
		return d.stageError(ctx, client, id, attempt, maxAttempts, "record the task's start point", err)
	}
	service := ""
	if sess.State != grove.SessionLive || (len(sess.Serve) > 0 && !d.serviceRunning(ctx, sess.ID)) {
		unlock := lockSession(d, sess.ID)
		res, err := d.startSession(ctx, sess.ID, "task "+id)
		unlock()
		if err != nil {
			return err
		}
		if res.State != grove.SessionLive {
			service = fmt.Sprintf("session %s is %s: %s", sess.ID, res.State, res.Reason)
		}
	}
	return d.Store.InTx(ctx, func(tx *store.Tx) error {
		ok, err := tx.SetState(ctx, id, []grove.TaskState{grove.StateQueued, grove.StatePreparing}, grove.StatePreparing, "")
		if err != nil || !ok {
			return err
		}
		if err := tx.SetTaskBase(ctx, id, start.Commit); err != nil {
			return err
		}
		if err := tx.NoteActivity(ctx, sess.ID, "task "+id); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, id, sess.ID, "worktree", fmt.Sprintf("in session %s at %.12s", sess.ID, start.Commit)); err != nil {
			return err
		}
		if start.Pending != "" {
			if err := tx.AddEvent(ctx, id, sess.ID, "session_pending", start.Pending); err != nil {
				return err
			}
		}
		if service != "" {
			if err := tx.AddEvent(ctx, id, sess.ID, "session_service", service+" (the task runs without it)"); err != nil {
				return err
			}
		}
		err = d.enqueue(ctx, client, tx, RunAgentArgs{TaskID: id, Attempt: task.Attempt, Timeout: task.Timeout})
		return err
	})
}
