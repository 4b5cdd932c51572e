package jobs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops/procscan"
	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

// RunSurvivors returns the live processes of attempt `attempt` of task: its
// supervisor (as recorded in the run row, or in the run directory), its
// agent's process group, any process carrying the task's GROVE_TASK_ID and,
// with inWorktree and a worktree of the task's own, any process working
// inside it. An error means "could not tell": callers treat it as alive.
func RunSurvivors(ctx context.Context, st *store.Store, home string, task grove.Task, attempt int, inWorktree bool) ([]int, error) {
	o := supervise.Owner{TaskID: task.ID}
	if attempt > 0 {
		o.Dir = RunDir(home, task.ID, attempt)
		run, err := st.AgentRun(ctx, task.ID, attempt)
		switch {
		case err == nil:
			o.Supervisor = supervise.Proc{Pid: run.Pid, StartTime: run.StartTime, BootID: run.BootID}
		case !errors.Is(err, grove.ErrNotFound):
			return nil, err
		}
	}
	if inWorktree && task.SessionID == "" {
		ws, err := st.TaskWorkspace(ctx, task.ID)
		switch {
		case err == nil && ws.State != grove.WorkspaceRemoved:
			o.WorkDir = ws.Path
		case err != nil && !errors.Is(err, grove.ErrNotFound):
			return nil, err
		}
	}
	return supervise.Survivors(o)
}

// earlierAttemptAlive returns the live processes of the attempt before the
// task's current one (and any process with its GROVE_TASK_ID): a new
// attempt must not start while one lives.
//
// A first attempt has no earlier one: no walk of /proc (a setup stage's
// leftovers are swept by its own supervisor), which keeps a warm start
// from paying for every process on the box.
func (d *Deps) earlierAttemptAlive(ctx context.Context, task grove.Task) ([]int, error) {
	if task.Attempt <= 1 {
		return nil, nil
	}
	return RunSurvivors(ctx, d.Store, d.Home, task, task.Attempt-1, false)
}

// finishLost ends a run whose supervisor is gone without an exit file, but
// only once no process of the run is left: while one lives (an agent's
// child that escaped, a supervisor whose run directory was deleted), the
// run is watched, not lost, and a cancel kills what lives (TERM, grace,
// KILL). A daemon stopping meanwhile leaves it to the next one.
func (w *RunAgentWorker) finishLost(ctx context.Context, client *Client, task grove.Task, dir string, exit supervise.Exit) error {
	d := w.d
	waitCtx, cancel := d.untilShutdown(ctx)
	defer cancel()
	var (
		announced bool
		termAt    time.Time
	)
	for {
		pids, err := RunSurvivors(ctx, d.Store, d.Home, task, task.Attempt, true)
		if err == nil && len(pids) == 0 {
			break
		}
		if err != nil {
			d.Logger.Warn("look for the run's processes", "task", task.ID, "err", err) // fail closed: alive
		} else if !announced {
			announced = true
			d.Logger.Warn("supervisor gone, processes of the run still alive", "task", task.ID, "pids", pids)
			if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
				return tx.AddEvent(ctx, task.ID, "", "orphaned", fmt.Sprintf(
					"supervisor gone without an exit, but processes of the run live (pids %v): watched until they end; grove cancel %s kills them", pids, task.ID))
			}); err != nil {
				return err
			}
		}
		if cur, err := d.Store.Task(ctx, task.ID); err == nil && cur.CancelAsked && len(pids) > 0 {
			switch {
			case termAt.IsZero():
				termAt = time.Now()
				procscan.KillAll(pids, syscall.SIGTERM)
			case time.Since(termAt) > d.Grace:
				procscan.KillAll(pids, syscall.SIGKILL)
			}
		}
		select {
		case <-waitCtx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return river.JobSnooze(0) // the next daemon watches on
		case <-time.After(max(d.Poll, 100*time.Millisecond)):
		}
	}
	if e, ok, err := supervise.ReadExit(dir); err == nil && ok {
		return w.finish(ctx, client, task, e) // it ended after all
	}
	if cur, err := d.Store.Task(ctx, task.ID); err == nil && cur.CancelAsked {
		exit = supervise.Exit{Code: -1, Reason: supervise.ReasonCanceled, Message: "canceled"}
	}
	return w.finish(ctx, client, task, exit)
}
