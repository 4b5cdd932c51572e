package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

// Session operations carried by SessionArgs.
const (
	SessionStart  = "start"  // create the worktree, start the service
	SessionStop   = "stop"   // stop the service (evicted), keep the worktree
	SessionResume = "resume" // start the service again
	SessionClose  = "close"  // gate, stop, remove the worktree, free the port
	// SessionRestart starts a dead service again under its restart policy
	// (inserted by the watcher when the backoff is over).
	SessionRestart = "restart"
)

// SessionArgs runs one operation on a session.
type SessionArgs struct {
	Key   string `json:"key"`
	Op    string `json:"op"`
	Force bool   `json:"force,omitempty"`
}

// Kind is stable: it is stored in river_job rows.
func (SessionArgs) Kind() string { return "session" }

// InsertOpts puts the job on the git queue.
func (SessionArgs) InsertOpts() river.InsertOpts { return gitOpts(priorityStart) }

// SessionWorker creates, stops, resumes and closes sessions. Every op is
// idempotent: a worktree that exists is reused, a service that runs is
// left running, a stopped one is not stopped again.
type SessionWorker struct {
	river.WorkerDefaults[SessionArgs]
	d *Deps
}

// Timeout allows a large checkout.
func (w *SessionWorker) Timeout(*river.Job[SessionArgs]) time.Duration { return 30 * time.Minute }

// Work dispatches on the operation.
func (w *SessionWorker) Work(ctx context.Context, job *river.Job[SessionArgs]) error {
	d, key := w.d, job.Args.Key
	sess, err := d.Store.Session(ctx, key)
	if errors.Is(err, grove.ErrNotFound) {
		return river.JobCancel(err)
	}
	if err != nil {
		return err
	}
	if sess.State == grove.SessionClosed {
		return nil
	}
	switch job.Args.Op {
	case SessionStart, SessionResume, SessionRestart:
		return w.start(ctx, job, sess)
	case SessionStop:
		return d.evict(ctx, key, "stopped by request")
	case SessionClose:
		return w.close(ctx, sess, job.Args.Force)
	}
	return river.JobCancel(fmt.Errorf("unknown session op %q", job.Args.Op))
}

// start creates the session's worktree if needed and starts its service:
// the session is live once the service listens on its port (see
// startService). A start that cannot succeed (no free port, the port
// taken, the service exits or never listens) leaves the session dead or
// failed with the reason, and cancels the job: the CLI reads the state.
func (w *SessionWorker) start(ctx context.Context, job *river.Job[SessionArgs], sess grove.Session) error {
	d, key, op := w.d, sess.ID, job.Args.Op
	skip := false
	res, err := func() (startResult, error) {
		unlock := lockSession(d, key)
		defer unlock() // before LRUCap, which takes other sessions' locks
		cur, err := d.Store.Session(ctx, key)
		if err != nil {
			return startResult{}, err
		}
		if cur.State == grove.SessionClosed || (op == SessionRestart && cur.State != grove.SessionDead) {
			skip = true // closed, or started, stopped or closed by hand since the restart was due
			return startResult{}, nil
		}
		if op != SessionRestart {
			// Started by hand: the restart budget starts again.
			if err := d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.SetRestarts(ctx, key, 0, nil) }); err != nil {
				return startResult{}, err
			}
		}
		return d.startSession(ctx, key, op)
	}()
	if skip {
		return nil
	}
	if err != nil {
		return d.sessionFailed(ctx, key, job, op+" session", err)
	}
	if res.State != grove.SessionLive {
		return river.JobCancel(fmt.Errorf("session %s %s: %s", key, res.State, res.Reason))
	}
	_, err = LRUCap(ctx, d, d.MaxLive, key)
	return err
}

// sessionFailed records a start that failed for good (a user error, or the
// last attempt of a transient one) as state failed; earlier attempts are
// retried.
func (d *Deps) sessionFailed(ctx context.Context, key string, job *river.Job[SessionArgs], what string, err error) error {
	if !giveUp(err, job.Attempt, job.MaxAttempts) {
		return err
	}
	msg := fmt.Sprintf("%s: %v", what, err)
	if h := grove.HintOf(err); h != "" {
		msg += " (hint: " + h + ")"
	}
	if rerr := d.Store.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.MoveSession(ctx, key, nil, grove.SessionFailed, msg); err != nil {
			return err
		}
		return tx.AddEvent(ctx, "", key, "session_failed", msg)
	}); rerr != nil {
		return rerr
	}
	return river.JobCancel(errors.New(msg))
}

// SessionBranch is the branch of a session's worktree.
// It sits in a directory of its own, like a task's (see TaskBranch).
func SessionBranch(key string) string { return "grove/session/" + key + "/work" }

// SessionPath is where a session's worktree lives.
func (d *Deps) SessionPath(repo grove.Repo, key string) string {
	return filepath.Join(filepath.Dir(d.WorktreePath(repo, "x")), "s-"+key)
}

// ensureSessionWorktree creates the session's worktree unless it exists.
func (d *Deps) ensureSessionWorktree(ctx context.Context, sess grove.Session) (grove.Workspace, error) {
	repoRow, err := d.Store.Repo(ctx, sess.RepoID)
	if err != nil {
		return grove.Workspace{}, err
	}
	ws := grove.Workspace{RepoID: sess.RepoID, SessionID: sess.ID, Path: d.SessionPath(repoRow, sess.ID),
		Branch: SessionBranch(sess.ID), BaseCommit: sess.BaseCommit, State: grove.WorkspaceCreating}
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		ws, err = tx.PutWorkspace(ctx, ws)
		return err
	})
	if err != nil {
		return ws, err
	}
	if ws.State == grove.WorkspaceReady {
		if _, err := os.Stat(ws.Path); err == nil {
			return ws, nil
		}
	}
	repo, err := d.Repo(ctx, sess.RepoPath)
	if err != nil {
		return ws, err
	}
	if err := repo.CreateWorktree(ctx, ws.Path, ws.Branch, sess.BaseCommit); err != nil {
		return ws, err
	}
	err = d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.SetWorkspaceState(ctx, ws.ID, grove.WorkspaceReady) })
	ws.State = grove.WorkspaceReady
	return ws, err
}

// stopService stops a session's service and everything it started: TERM
// to its supervisor (which TERMs the group, waits the grace, KILLs it), then
// the sweep of the service's tree (its supervisor's session, processes
// carrying its GROVE_SESSION and GROVE_WORKTREE, processes started since
// working in the worktree; never a task's agent): TERM, grace, KILL. It
// records the run's end. A process that survives KILL is an error.
func (d *Deps) stopService(ctx context.Context, key string) error {
	var (
		run grove.Run
		ws  grove.Workspace
	)
	err := d.Store.Read(ctx, func(tx *store.Tx) error {
		var err error
		if run, err = tx.ServiceRun(ctx, key); err != nil {
			return err
		}
		ws, err = tx.SessionWorkspace(ctx, key)
		if errors.Is(err, grove.ErrNotFound) {
			err = nil
		}
		return err
	})
	if errors.Is(err, grove.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if supervise.Alive(run.Dir) {
		// The watcher must not take this end for a crash (and restart it).
		if err := os.WriteFile(filepath.Join(run.Dir, stoppingFile), nil, 0o600); err != nil {
			return fmt.Errorf("stop service of %s: %w", key, err)
		}
		if err := SignalRun(run.Dir, syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("stop service of %s: %w", key, err)
		}
		deadline := time.Now().Add(d.Grace + 5*time.Second)
		for supervise.Alive(run.Dir) {
			if time.Now().After(deadline) {
				return fmt.Errorf("service of session %s did not stop", key)
			}
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return err
			}
		}
	}
	tree := serviceTree{supPid: run.Pid, supStart: run.StartTime, key: key, worktree: ws.Path}
	if left := tree.kill(min(d.Grace, 3*time.Second)); len(left) > 0 {
		return fmt.Errorf("stop service of %s: processes %v survive SIGKILL", key, left)
	}
	if run.EndedAt != nil {
		return nil
	}
	exit, _, _ := supervise.ReadExit(run.Dir)
	return d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.EndRun(ctx, run.ID, exit.Code, exit.Reason) })
}

// evict marks a session evicted (first, so the watcher does not take the
// service's end for a crash) and stops its service's whole tree; its
// worktree stays, and its port until the lease expires (--port-lease), so
// the next task or resume starts it again, on the same port when free.
func (d *Deps) evict(ctx context.Context, key, why string) error {
	unlock := lockSession(d, key)
	defer unlock()
	moved := false
	if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		moved, err = tx.MoveSession(ctx, key, nil, grove.SessionEvicted, "")
		if err != nil || !moved {
			return err
		}
		return tx.AddEvent(ctx, "", key, "session_evicted", why)
	}); err != nil || !moved {
		return err
	}
	grove.Failpoint("session.evict.after-state") // the watcher finishes the stop
	return d.stopService(ctx, key)
}

func (w *SessionWorker) close(ctx context.Context, sess grove.Session, force bool) error {
	d := w.d
	var (
		ws   grove.Workspace
		busy bool
	)
	err := d.Store.Read(ctx, func(tx *store.Tx) error {
		var err error
		if busy, err = tx.SessionBusy(ctx, sess.ID, "", false); err != nil {
			return err
		}
		ws, err = tx.SessionWorkspace(ctx, sess.ID)
		if errors.Is(err, grove.ErrNotFound) {
			err = nil
		}
		return err
	})
	if err != nil {
		return err
	}
	if busy {
		return river.JobCancel(d.Store.AddEvent(ctx, "", sess.ID, "close_refused", "session has a task in progress"))
	}
	if err := d.stopService(ctx, sess.ID); err != nil {
		return err
	}
	if ws.ID == 0 {
		return d.Store.InTx(ctx, func(tx *store.Tx) error {
			if err := closeSessionTx(ctx, tx, sess.ID); err != nil {
				return err
			}
			return tx.AddEvent(ctx, "", sess.ID, "session_closed", "no worktree to remove")
		})
	}
	r := d.removalOf(store.OwnedWorkspace{Workspace: ws, RepoPath: sess.RepoPath}, nil)
	r.Gate = gitops.GateOptions{Branch: ws.Branch, AppliedRefs: []string{sess.BaseCommit}}
	r.Force, r.Wait = force, true
	r.Event, r.Message, r.RefusedEvent = "session_closed", "worktree removed", "close_refused"
	res, err := d.Remove(ctx, r)
	switch {
	case errors.Is(err, grove.ErrAtRisk):
		return nil // recorded: the session stays, its worktree kept
	case err != nil:
		return fmt.Errorf("remove session worktree: %w", err)
	case res.Skipped == SkipGone:
		return d.Store.InTx(ctx, func(tx *store.Tx) error { return closeSessionTx(ctx, tx, sess.ID) })
	case res.Skipped != "":
		return river.JobCancel(d.Store.AddEvent(ctx, "", sess.ID, "close_refused", res.Skipped))
	}
	return nil
}

func sleepCtx(ctx context.Context, dur time.Duration) error {
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
