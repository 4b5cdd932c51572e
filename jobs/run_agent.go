package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"syscall"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

// RunAgentArgs runs a task's agent under a supervisor and waits for it.
type RunAgentArgs struct {
	TaskID  string        `json:"task_id"`
	Attempt int           `json:"attempt"`
	Timeout time.Duration `json:"timeout"` // the task's; sizes the job timeout
}

// Kind is stable: it is stored in river_job rows.
func (RunAgentArgs) Kind() string { return "run_agent" }

// InsertOpts puts the job on the agent queue (bounded by --max-agents).
func (RunAgentArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueAgent, MaxAttempts: 10}
}

// RunAgentWorker starts (or re-adopts) the supervisor of a task's agent,
// waits for it to end, and hands off to diff, or ends the task.
type RunAgentWorker struct {
	river.WorkerDefaults[RunAgentArgs]
	d *Deps
}

// Timeout is the task's timeout plus room for the supervisor's own kill
// sequence; the supervisor enforces the task timeout itself.
func (w *RunAgentWorker) Timeout(job *river.Job[RunAgentArgs]) time.Duration {
	if job.Args.Timeout <= 0 {
		return 7 * 24 * time.Hour
	}
	return job.Args.Timeout + w.d.Grace + 5*time.Minute
}

// Work never starts an agent twice: supervise.Probe tells a run that never
// started from one that is alive (adopted) or ended (collected).
func (w *RunAgentWorker) Work(ctx context.Context, job *river.Job[RunAgentArgs]) error {
	d, id := w.d, job.Args.TaskID
	client := river.ClientFromContext[*sqlTx](ctx)
	// The agent slot: an early start's (see early_start.go), or one taken
	// now; none free (early starts hold some) waits a moment.
	early, err := d.takeEarlyStart(ctx, id)
	if err != nil {
		return river.JobSnooze(0) // stopping: the next daemon probes the run
	}
	if early == nil && !d.takeAgentSlot() {
		return river.JobSnooze(100 * time.Millisecond)
	}
	defer d.releaseAgentSlot()
	task, ok, err := d.stageTask(ctx, id, grove.StatePreparing, grove.StateRunning)
	if err != nil || !ok || task.Attempt != job.Args.Attempt {
		return err
	}
	dir := d.RunDir(id, task.Attempt)
	status, exit, err := supervise.Probe(dir)
	if err != nil {
		return err
	}
	var done <-chan struct{}
	if status == supervise.NotStarted {
		// A run row means a supervisor was started for this attempt: its
		// directory was deleted or damaged. Never start it again.
		if _, err := d.Store.AgentRun(ctx, id, task.Attempt); err == nil {
			status, exit = supervise.Lost, supervise.Exit{Code: -1, Reason: supervise.ReasonLost,
				Message: "run directory " + dir + " gone or incomplete"}
		} else if !errors.Is(err, grove.ErrNotFound) {
			return err
		}
	}
	switch status {
	case supervise.NotStarted:
		if task.CancelAsked {
			return w.finish(ctx, client, task, supervise.Exit{Code: -1, Reason: supervise.ReasonCanceled, Message: "canceled"})
		}
		// No attempt starts while a process of an earlier one lives.
		if pids, err := d.earlierAttemptAlive(ctx, task); err != nil || len(pids) > 0 {
			if err != nil {
				return err
			}
			d.Logger.Warn("agent not started: processes of an earlier attempt still run", "task", id, "pids", pids)
			return river.JobSnooze(time.Second)
		}
		started, err := d.startRun(ctx, task, dir)
		if err != nil {
			return err
		}
		done = started.Done
	case supervise.Running:
		if early != nil && early.done != nil {
			done = early.done // started (and recorded) by create_worktree
		} else if err := w.adopt(ctx, task, dir); err != nil {
			return err
		}
	case supervise.Ended:
		return w.finish(ctx, client, task, exit)
	case supervise.Lost:
		return w.finishLost(ctx, client, task, dir, exit)
	}
	var ticks, waiting int
	waitCtx, cancel := d.untilShutdown(ctx)
	defer cancel()
	exit, err = supervise.Wait(waitCtx, dir, done, d.Poll, func() {
		if task.Options.TTY {
			w.noteWaiting(ctx, id, dir, &waiting)
		}
		ticks++
		if ticks%10 == 0 { // a cancel recorded while no CLI could signal
			w.forwardCancel(ctx, id, dir)
		}
	})
	if err != nil {
		if waitCtx.Err() != nil {
			// The daemon is stopping: the agent keeps running and the next
			// daemon adopts it. Snoozing does not count as an attempt.
			return river.JobSnooze(0)
		}
		return err
	}
	if exit.Reason == supervise.ReasonLost {
		return w.finishLost(ctx, client, task, dir, exit)
	}
	return w.finish(ctx, client, task, exit)
}

// startRun starts the supervisor of task's run in dir, which has never
// started (the caller checked: supervise.Probe, and no run row), and
// records it: the run row, the task running, the "started" event. A
// supervisor started but not recorded (an error) reads as running, and
// run_agent adopts it.
func (d *Deps) startRun(ctx context.Context, task grove.Task, dir string) (supervise.Started, error) {
	id := task.ID
	ws, err := d.Store.TaskWorkspace(ctx, id)
	if err != nil {
		return supervise.Started{}, err
	}
	port := 0
	if task.SessionID != "" {
		sess, err := d.Store.Session(ctx, task.SessionID)
		if err != nil {
			return supervise.Started{}, err
		}
		port = sess.Port
	}
	sb, sbEnv, err := d.sandboxFor(ctx, task, ws, dir, port)
	if err != nil {
		return supervise.Started{}, err
	}
	spec := supervise.Spec{WorkDir: ws.Path, Argv: task.Argv, Env: append(AgentEnv(task, ws, port), sbEnv...),
		Timeout: task.Timeout, Grace: d.Grace, Sweep: task.SessionID == "", Sandbox: sb,
		TTY: task.Options.TTY}
	started, err := d.startSupervisor(dir, spec)
	if err != nil {
		return supervise.Started{}, err
	}
	grove.Failpoint("run.after-supervisor-start")
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.InsertAgentRun(ctx, grove.Run{TaskID: id, Attempt: task.Attempt, Pid: started.Pid,
			StartTime: started.StartTime, BootID: started.BootID, Dir: dir}); err != nil {
			return err
		}
		if _, err := tx.SetState(ctx, id, []grove.TaskState{grove.StatePreparing}, grove.StateRunning, ""); err != nil {
			return err
		}
		if err := tx.AddEvent(ctx, id, "", "started", fmt.Sprintf("agent started under supervisor pid %d", started.Pid)); err != nil {
			return err
		}
		grove.Failpoint("run.before-run-commit")
		return nil
	})
	if err != nil {
		return supervise.Started{}, err
	}
	d.Logger.Info("agent started", "task", id, "supervisor", started.Pid)
	return started, nil
}

// adopt records a run found alive after a daemon restart.
func (w *RunAgentWorker) adopt(ctx context.Context, task grove.Task, dir string) error {
	p, err := supervise.ReadProc(dir)
	if err != nil {
		return err
	}
	w.d.Logger.Info("agent adopted", "task", task.ID, "supervisor", p.Pid)
	return w.d.Store.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.AgentRun(ctx, task.ID, task.Attempt); errors.Is(err, grove.ErrNotFound) {
			if _, err := tx.InsertAgentRun(ctx, grove.Run{TaskID: task.ID, Attempt: task.Attempt, Pid: p.Pid,
				StartTime: p.StartTime, BootID: p.BootID, Dir: dir}); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if _, err := tx.SetState(ctx, task.ID, []grove.TaskState{grove.StatePreparing}, grove.StateRunning, ""); err != nil {
			return err
		}
		return tx.AddEvent(ctx, task.ID, "", "adopted", fmt.Sprintf("agent re-adopted, supervisor pid %d", p.Pid))
	})
}

// forwardCancel signals the supervisor when a cancel was recorded.
func (w *RunAgentWorker) forwardCancel(ctx context.Context, id, dir string) {
	task, err := w.d.Store.Task(ctx, id)
	if err != nil || !task.CancelAsked {
		return
	}
	if err := SignalRun(dir, syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		w.d.Logger.Warn("forward cancel", "task", id, "err", err)
	}
}

// SignalRun sends sig to the supervisor of the run in dir, if it is still
// the process that recorded itself there.
func SignalRun(dir string, sig syscall.Signal) error {
	p, err := supervise.ReadProc(dir)
	if err != nil {
		return err
	}
	return p.Signal(sig)
}

// finish records how the run ended and hands off: diff after any exit of
// the agent itself (work is never dropped), otherwise the task ends and a
// close cleans up what the gate allows.
func (w *RunAgentWorker) finish(ctx context.Context, client *Client, task grove.Task, exit supervise.Exit) error {
	id := task.ID
	if err := w.d.SettleRunObjects(ctx, task); err != nil {
		return err
	}
	return w.d.Store.InTx(ctx, func(tx *store.Tx) error {
		if run, err := tx.AgentRun(ctx, id, task.Attempt); err == nil {
			if run.EndedAt == nil {
				if err := tx.EndRun(ctx, run.ID, exit.Code, exit.Reason); err != nil {
					return err
				}
			}
		} else if !errors.Is(err, grove.ErrNotFound) {
			return err
		}
		live := []grove.TaskState{grove.StatePreparing, grove.StateRunning}
		var (
			to  grove.TaskState
			msg string
		)
		switch exit.Reason {
		case supervise.ReasonExited:
			if err := tx.SetExitCode(ctx, id, exit.Code); err != nil {
				return err
			}
			to = grove.StateDiffing
		case supervise.ReasonCanceled:
			to, msg = grove.StateCanceled, "canceled"
		case supervise.ReasonTimeout:
			to, msg = grove.StateFailed, exit.Message
		case supervise.ReasonLost:
			to, msg = grove.StateFailed, "agent lost: "+exit.Message+"; grove retry "+id+" runs it again"
		default:
			to, msg = grove.StateFailed, exit.Message
		}
		ok, err := tx.SetState(ctx, id, live, to, msg)
		if err != nil || !ok {
			return err
		}
		evMsg := fmt.Sprintf("agent ended: %s, exit code %d", exit.Reason, exit.Code)
		if msg != "" {
			evMsg += ": " + msg
		}
		if err := tx.AddEvent(ctx, id, "", "ended", evMsg); err != nil {
			return err
		}
		if to == grove.StateDiffing {
			err = w.d.enqueue(ctx, client, tx, DiffArgs{TaskID: id})
		} else {
			err = w.d.enqueue(ctx, client, tx, CloseArgs{TaskID: id})
		}
		return err
	})
}

// AgentEnv is the environment an agent runs with: the submitter's
// allow-listed variables (PATH, HOME, USER, LANG, LC_*, TERM, TZ, SHELL and
// --pass-env names; see baseEnv), the submitter's PATH, gc.auto=0 for
// git, the GROVE_* variables, and the task's --env last (it wins).
// Nothing else of the daemon's environment is passed on.
func AgentEnv(task grove.Task, ws grove.Workspace, port int) []string {
	env := baseEnv(task)
	path := task.Path
	if path == "" {
		path = os.Getenv("PATH")
	}
	env = append(env, "PATH="+path)
	env = append(env, gitops.AgentEnv()...)
	env = append(env, "GROVE_TASK_ID="+task.ID, "GROVE_WORKTREE="+ws.Path, "GROVE_BASE_COMMIT="+ws.BaseCommit)
	if port > 0 {
		env = append(env, fmt.Sprintf("GROVE_PORT=%d", port))
	}
	keys := make([]string, 0, len(task.Env))
	for k := range task.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+task.Env[k])
	}
	return env
}
