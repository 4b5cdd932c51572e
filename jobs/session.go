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
	case SessionStart, SessionResume:
		ws, err := d.ensureSessionWorktree(ctx, sess)
		if err != nil {
			return d.sessionFailed(ctx, key, job, "create session worktree", err)
		}
		if err := d.startService(ctx, sess, ws); err != nil {
			return d.sessionFailed(ctx, key, job, "start service", err)
		}
		if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
			if err := tx.SetSessionState(ctx, key, grove.SessionLive, true); err != nil {
				return err
			}
			return tx.AddEvent(ctx, "", key, "session_"+job.Args.Op, "session live at "+ws.Path)
		}); err != nil {
			return err
		}
		_, err = LRUCap(ctx, d, d.MaxLive, key)
		return err
	case SessionStop:
		return d.evict(ctx, key, "stopped by request")
	case SessionClose:
		return w.close(ctx, sess, job.Args.Force)
	}
	return river.JobCancel(fmt.Errorf("unknown session op %q", job.Args.Op))
}

func (d *Deps) sessionFailed(ctx context.Context, key string, job *river.Job[SessionArgs], what string, err error) error {
	if !giveUp(err, job.Attempt, job.MaxAttempts) {
		return err
	}
	msg := fmt.Sprintf("%s: %v", what, err)
	if rerr := d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.AddEvent(ctx, "", key, "session_failed", msg) }); rerr != nil {
		return rerr
	}
	return river.JobCancel(errors.New(msg))
}

// SessionBranch is the branch of a session's worktree.
func SessionBranch(key string) string { return "grove/session/" + key }

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

// startService starts the session's service under a supervisor on its
// leased port, unless it has none or it is already running.
func (d *Deps) startService(ctx context.Context, sess grove.Session, ws grove.Workspace) error {
	if len(sess.Serve) == 0 {
		return nil
	}
	var (
		port int
		n    = 1
	)
	running := false
	err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		if run, err := tx.ServiceRun(ctx, sess.ID); err == nil {
			if supervise.Alive(run.Dir) {
				running = true
				return nil
			}
			n = run.Attempt + 1
		} else if !errors.Is(err, grove.ErrNotFound) {
			return err
		}
		var err error
		port, err = tx.LeasePort(ctx, sess.ID, d.PortLo, d.PortHi)
		return err
	})
	if err != nil || running {
		return err
	}
	dir := filepath.Join(d.Home, "runs", fmt.Sprintf("s-%s-svc-%d", sess.ID, n))
	env := AgentEnv(grove.Task{ID: "", Path: ""}, ws, port)
	env = append(env, "GROVE_SESSION="+sess.ID)
	started, err := supervise.Start(d.Exe, dir, supervise.Spec{WorkDir: ws.Path, Argv: sess.Serve, Env: env, Grace: d.Grace})
	if err != nil {
		return err
	}
	d.Logger.Info("service started", "session", sess.ID, "port", port, "supervisor", started.Pid)
	return d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.InsertServiceRun(ctx, sess.ID, n, grove.Run{Pid: started.Pid, StartTime: started.StartTime,
			BootID: started.BootID, Dir: dir}); err != nil {
			return err
		}
		return tx.AddEvent(ctx, "", sess.ID, "service_started", fmt.Sprintf("port %d, supervisor pid %d", port, started.Pid))
	})
}

// stopService stops a session's service (TERM, grace, KILL by its
// supervisor) and waits for the supervisor to end.
func (d *Deps) stopService(ctx context.Context, key string) error {
	var run grove.Run
	err := d.Store.Read(ctx, func(tx *store.Tx) error {
		var err error
		run, err = tx.ServiceRun(ctx, key)
		return err
	})
	if errors.Is(err, grove.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if supervise.Alive(run.Dir) {
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
	if run.EndedAt != nil {
		return nil
	}
	exit, _, _ := supervise.ReadExit(run.Dir)
	return d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.EndRun(ctx, run.ID, exit.Code, exit.Reason) })
}

// evict stops a session's service and marks it evicted; its worktree and
// port stay, so the next task or resume restarts it the same way.
func (d *Deps) evict(ctx context.Context, key, why string) error {
	if err := d.stopService(ctx, key); err != nil {
		return err
	}
	return d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetSessionState(ctx, key, grove.SessionEvicted, false); err != nil {
			return err
		}
		return tx.AddEvent(ctx, "", key, "session_evicted", why)
	})
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

// EvictIdle stops the service of every live session that has no task in
// progress and no activity for ttl (as of now). It returns the keys evicted.
func EvictIdle(ctx context.Context, d *Deps, now time.Time, ttl time.Duration) ([]string, error) {
	sessions, err := d.Store.Sessions(ctx, false)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range sessions {
		if s.State != grove.SessionLive || now.Sub(s.LastUsedAt) < ttl {
			continue
		}
		if busy, err := d.sessionBusy(ctx, s.ID); err != nil || busy {
			if err != nil {
				return out, err
			}
			continue
		}
		if err := d.evict(ctx, s.ID, fmt.Sprintf("idle for %s (ttl %s)", now.Sub(s.LastUsedAt).Round(time.Second), ttl)); err != nil {
			return out, err
		}
		out = append(out, s.ID)
	}
	return out, nil
}

// LRUCap evicts the least recently used idle live sessions until at most
// max are live; a busy session is never evicted, nor `keep`. It returns the
// keys evicted.
func LRUCap(ctx context.Context, d *Deps, max int, keep string) ([]string, error) {
	if max <= 0 {
		return nil, nil
	}
	sessions, err := d.Store.Sessions(ctx, false) // least recently used first
	if err != nil {
		return nil, err
	}
	live := 0
	for _, s := range sessions {
		if s.State == grove.SessionLive {
			live++
		}
	}
	var out []string
	for _, s := range sessions {
		if live <= max {
			break
		}
		if s.State != grove.SessionLive || s.ID == keep {
			continue
		}
		busy, err := d.sessionBusy(ctx, s.ID)
		if err != nil {
			return out, err
		}
		if busy {
			continue
		}
		if err := d.evict(ctx, s.ID, fmt.Sprintf("least recently used beyond the cap of %d live sessions", max)); err != nil {
			return out, err
		}
		out = append(out, s.ID)
		live--
	}
	return out, nil
}

func (d *Deps) sessionBusy(ctx context.Context, key string) (bool, error) {
	var busy bool
	err := d.Store.Read(ctx, func(tx *store.Tx) error {
		var err error
		busy, err = tx.SessionBusy(ctx, key, "", false)
		return err
	})
	return busy, err
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
