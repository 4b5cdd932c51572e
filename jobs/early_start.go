package jobs

import (
	"context"
	"errors"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs/supervise"
)

// Starting the agent from create_worktree. A task whose worktree is ready
// and needs no setup would otherwise wait for a second trip through River
// (the hand-off's commit, a wake, a fetch of run_agent, its first reads:
// 3–5 ms of the warm start). When an agent slot is free, create_worktree
// starts the agent itself right after the hand-off commits, with the same
// code run_agent uses (Deps.startRun), and run_agent, when River gives it
// the job, finds the run started and waits for it.
//
// What stays true:
//   - The run_agent job is inserted in the hand-off's transaction as
//     always: a crash at any point leaves a job that probes the run
//     (supervise.Probe) and adopts, collects or starts it: never twice.
//     A create_worktree job run again after a crash (River's attempt > 1)
//     never starts early.
//   - The two never race in one daemon: the early start is registered
//     before the hand-off commits, and run_agent waits for it to be over
//     before it probes the run.
//   - --max-agents holds. River bounds the run_agent workers of the agent
//     queue to it; an early start holds a slot of the same count
//     (Deps.agentSlots) until its run_agent job takes it over, and a
//     run_agent job that finds no slot free (early starts hold them) is
//     snoozed 100 ms (River makes it available again on its next
//     scheduling pass).
//   - Order holds: no early start while a job waits on the agent queue
//     (a snoozed one included), so an early start never passes a task
//     that came first.
//   - A cancel recorded since the hand-off starts nothing.
//
// Sessions (one task at a time in the session's worktree, ordered by
// run_agent's checks), retries and tasks with setup take the usual path.

// earlyStart is one early start of this daemon.
type earlyStart struct {
	over chan struct{}   // closed once the start is over, started or not
	done <-chan struct{} // the supervisor's exit when it was started; nil if not
}

// reserveEarlyStart registers an early start of task id and takes an agent
// slot for it; false when early starts are off (no --max-agents: not the
// daemon) or no slot is free. Call before the hand-off commits; end it
// with startEarly or dropEarlyStart.
func (d *Deps) reserveEarlyStart(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.maxAgents <= 0 || d.agentSlots >= d.maxAgents || d.early[id] != nil {
		return false
	}
	if d.early == nil {
		d.early = map[string]*earlyStart{}
	}
	d.agentSlots++
	d.early[id] = &earlyStart{over: make(chan struct{})}
	return true
}

// dropEarlyStart ends a reservation that will not start anything (the
// hand-off failed or the task was canceled): its slot is freed.
func (d *Deps) dropEarlyStart(id string) {
	d.mu.Lock()
	e := d.early[id]
	delete(d.early, id)
	if e != nil {
		d.agentSlots--
	}
	d.mu.Unlock()
	if e != nil {
		close(e.over)
	}
}

// startEarly starts task's agent (the hand-off has committed), unless its
// run was started already; run_agent then takes the reservation over.
// Whatever goes wrong is left to run_agent, which probes the run.
func (d *Deps) startEarly(ctx context.Context, task grove.Task) {
	d.mu.Lock()
	e := d.early[task.ID]
	d.mu.Unlock()
	if e == nil {
		return
	}
	defer close(e.over)
	dir := d.RunDir(task.ID, task.Attempt)
	if status, _, err := supervise.Probe(dir); err != nil || status != supervise.NotStarted {
		return
	}
	if _, err := d.Store.AgentRun(ctx, task.ID, task.Attempt); !errors.Is(err, grove.ErrNotFound) {
		return
	}
	if cur, err := d.Store.Task(ctx, task.ID); err != nil || cur.CancelAsked || cur.State != grove.StatePreparing {
		return // canceled since the hand-off: run_agent ends it
	}
	started, err := d.startRun(ctx, task, dir)
	if err != nil {
		// A supervisor started but not recorded reads as running:
		// run_agent adopts it (records it) rather than only waiting.
		d.Logger.Warn("early agent start: run_agent takes it from here", "task", task.ID, "err", err)
		return
	}
	e.done = started.Done
}

// agentQueue is the agent queue this daemon works (its host's on
// PostgreSQL).
func (d *Deps) agentQueue() string {
	if d.Store.Postgres() {
		return HostQueue(QueueAgent, d.Store.Host())
	}
	return QueueAgent
}

// takeEarlyStart returns this daemon's early start of task id, once it is
// over, and hands its agent slot to the caller (run_agent); nil when
// there was none.
func (d *Deps) takeEarlyStart(ctx context.Context, id string) (*earlyStart, error) {
	d.mu.Lock()
	e := d.early[id]
	d.mu.Unlock()
	if e == nil {
		return nil, nil
	}
	select {
	case <-e.over:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	d.mu.Lock()
	if d.early[id] == e {
		delete(d.early, id)
	} else {
		e = nil // taken by another run_agent job of the task: not ours
	}
	d.mu.Unlock()
	return e, nil
}

// takeAgentSlot takes an agent slot for a run_agent worker; false when
// none is free. Without --max-agents (not the daemon) it always succeeds.
func (d *Deps) takeAgentSlot() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.maxAgents > 0 && d.agentSlots >= d.maxAgents {
		return false
	}
	d.agentSlots++
	return true
}

// releaseAgentSlot gives back a run_agent worker's slot.
func (d *Deps) releaseAgentSlot() {
	d.mu.Lock()
	d.agentSlots--
	d.mu.Unlock()
}
