package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grove-dev/grove"
)

// groveCLI runs grove subcommands on the bench home.
type groveCLI struct {
	r    runner
	bin  string
	home string
	// settle bounds `grove wait` on one task: past it the run fails,
	// naming the task and its state (0: only the run's --timeout).
	settle time.Duration
}

// run runs `grove --home <home> args...` in dir and returns its stdout.
func (g groveCLI) run(ctx context.Context, dir string, args ...string) ([]byte, error) {
	return output(g.r.cmd(ctx, dir, nil, g.bin, append([]string{"--home", g.home}, args...)...), nil)
}

// submit runs `grove submit --apply <apply>` (auto, or manual: stop at
// review) of the bench agent on repo and returns the task id, when the
// process was started, and its wall time.
func (g groveCLI) submit(ctx context.Context, repo, benchDir, apply string) (string, time.Time, time.Duration, error) {
	began := time.Now()
	out, err := g.run(ctx, repo, "submit", "--repo", repo, "--apply", apply, "--timeout", "10m",
		"--env", "BENCH_DIR="+benchDir, "--", "sh", "-c", agentScript)
	wall := time.Since(began)
	if err != nil {
		return "", began, wall, err
	}
	id := strings.TrimSpace(string(out))
	if id == "" || strings.ContainsAny(id, " \n") {
		return "", began, wall, fmt.Errorf("grove submit printed %q, not a task id", out)
	}
	return id, began, wall, nil
}

// submitWait runs `grove submit --wait --json --apply auto` of the bench
// agent on repo, as a script that blocks on its task does: one process
// that prints the task id on stderr at once and the settled task as JSON
// on stdout. It returns the task, when the process was started and when it
// returned; a task that did not land is an error, whatever the exit code.
func (g groveCLI) submitWait(ctx context.Context, repo, benchDir string) (task lsTask, began, end time.Time, err error) {
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if g.settle > 0 {
		wctx, cancel = context.WithTimeout(ctx, g.settle)
	}
	defer cancel()
	began = time.Now()
	c := g.r.cmd(wctx, repo, nil, g.bin, "--home", g.home, "submit", "--wait", "--json", "--repo", repo, "--apply", "auto",
		"--timeout", "10m", "--env", "BENCH_DIR="+benchDir, "--", "sh", "-c", agentScript)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	runErr := c.Run()
	end = time.Now()
	id, _, _ := strings.Cut(stderr.String(), "\n") // the id comes first
	id = strings.TrimSpace(id)
	if wctx.Err() != nil && ctx.Err() == nil && grove.ValidTaskID(id) {
		return lsTask{}, began, end, g.unsettled(ctx, id, "settle", g.settle)
	}
	var t lsTask
	if err := json.Unmarshal(stdout.Bytes(), &t); err != nil || t.ID == "" || t.ID != id {
		if runErr != nil {
			return lsTask{}, began, end, fmt.Errorf("grove submit --wait: %w: %s", runErr, clipLines(stderr.String(), 5))
		}
		return lsTask{}, began, end, fmt.Errorf("grove submit --wait --json printed %q (stderr %q), not the task", clipLines(stdout.String(), 3), clipLines(stderr.String(), 3))
	}
	if t.State != "applied" {
		return t, began, end, fmt.Errorf("task %s ended in state %s: %s", t.ID, t.State, t.Error)
	}
	if runErr != nil {
		return t, began, end, fmt.Errorf("task %s is %s but: %w", t.ID, t.State, runErr)
	}
	return t, began, end, nil
}

// lsTask is the part of a task in `grove ls --json` and `grove wait --json`
// the harness reads.
type lsTask struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Error    string `json:"error"`
	Worktree string `json:"worktree"` // the workspace's state: removed once closed
}

// ls runs `grove ls --json`.
func (g groveCLI) ls(ctx context.Context) ([]lsTask, error) {
	out, err := g.run(ctx, "", "ls", "--json")
	if err != nil {
		return nil, err
	}
	var ts []lsTask
	if err := json.Unmarshal(out, &ts); err != nil {
		return nil, fmt.Errorf("grove ls --json: %w", err)
	}
	return ts, nil
}

// badStates end a bench task without its change landing. (review is never
// settled with --apply auto unless the apply was refused or the agent
// failed: diff moves review → applying in one transaction.)
var badStates = map[string]bool{"failed": true, "conflict": true, "canceled": true, "discarded": true, "review": true, "closed": true}

// wait runs `grove wait --json id`, as a script would after submitting with
// --apply auto: it returns once the task is settled, i.e. applied or
// failed; grove polls the database in-process for it.
// end is when the process returned. A task that did not land is an error,
// whatever the exit code.
func (g groveCLI) wait(ctx context.Context, id string) (task lsTask, end time.Time, err error) {
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if g.settle > 0 {
		wctx, cancel = context.WithTimeout(ctx, g.settle)
	}
	out, runErr := g.run(wctx, "", "wait", "--json", id)
	end = time.Now()
	timedOut := wctx.Err() != nil && ctx.Err() == nil
	cancel()
	if timedOut {
		return lsTask{}, end, g.unsettled(ctx, id, "settle", g.settle)
	}
	task, err = waitOutcome(id, out, runErr)
	return task, end, err
}

// waitOutcome judges the output of `grove wait --json id` (a JSON array
// of the task) and its error (grove wait exits non-zero for a failed,
// canceled or conflicting task): nil only for an applied task.
func waitOutcome(id string, out []byte, runErr error) (lsTask, error) {
	var ts []lsTask
	if err := json.Unmarshal(out, &ts); err != nil || len(ts) != 1 || ts[0].ID != id {
		if runErr != nil {
			return lsTask{}, runErr
		}
		return lsTask{}, fmt.Errorf("grove wait --json %s printed %q, not that task", id, clipLines(string(out), 3))
	}
	t := ts[0]
	if t.State != "applied" {
		return t, fmt.Errorf("task %s ended in state %s: %s", id, t.State, t.Error)
	}
	if runErr != nil {
		return t, fmt.Errorf("task %s is %s but: %w", id, t.State, runErr)
	}
	return t, nil
}

// unsettled is the error for task id that did not reach what (settle,
// close) within d: its id and its state now.
func (g groveCLI) unsettled(ctx context.Context, id, what string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, wt, err := g.taskState(ctx, id)
	if err != nil {
		return fmt.Errorf("task %s did not %s within %s (its state: %v)", id, what, d, err)
	}
	return fmt.Errorf("task %s did not %s within %s: it is %s (worktree %s)", id, what, d, st, orNone(wt))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// closeWaiter waits for tasks to be closed (worktree removed) by polling
// `grove ls --json`, a process per poll, every interval. It runs only at
// the end of a grove phase and between the sequential submits, never
// while tasks are being measured: when a task is applied is learnt from
// `grove wait` (see groveCLI.wait).
type closeWaiter struct {
	g        groveCLI
	interval time.Duration
	walls    []time.Duration // every poll's wall time (one goroutine polls at a time)
	// settle bounds one waitClosed: past it the run fails, naming the
	// tasks not closed and their states (0: only the run's --timeout).
	settle time.Duration
}

// closedTasks reads one `grove ls` listing for ids: how many are not closed
// yet (applied, its worktree removed), or an error for one that ended
// without landing.
func closedTasks(ts []lsTask, ids []string) (pending int, err error) {
	byID := make(map[string]lsTask, len(ts))
	for _, t := range ts {
		byID[t.ID] = t
	}
	for _, id := range ids {
		t, ok := byID[id]
		switch {
		case ok && t.State == "applied" && t.Worktree == "removed":
		case ok && badStates[t.State]:
			return 0, fmt.Errorf("task %s ended in state %s: %s", id, t.State, t.Error)
		default: // applied, on its way, or not listed yet
			pending++
		}
	}
	return pending, nil
}

// notClosed names the tasks of ids that ts does not show closed, with
// their states.
func notClosed(ts []lsTask, ids []string) string {
	byID := make(map[string]lsTask, len(ts))
	for _, t := range ts {
		byID[t.ID] = t
	}
	var out []string
	for _, id := range ids {
		t, ok := byID[id]
		switch {
		case !ok:
			out = append(out, "task "+id+" not listed")
		case t.State != "applied" || t.Worktree != "removed":
			out = append(out, fmt.Sprintf("task %s is %s (worktree %s)", id, t.State, orNone(t.Worktree)))
		}
	}
	return strings.Join(out, "; ")
}

// waitClosed polls until every id shows closed and returns the end of the
// first poll that saw them all closed. Ten failed polls in a row are an
// error, and so is a wait longer than w.settle (naming what is not closed).
func (w *closeWaiter) waitClosed(ctx context.Context, ids []string) (time.Time, error) {
	failures, pending := 0, len(ids)
	var deadline time.Time
	if w.settle > 0 {
		deadline = time.Now().Add(w.settle)
	}
	for {
		began := time.Now()
		ts, err := w.g.ls(ctx)
		seen := time.Now()
		switch {
		case err != nil && ctx.Err() != nil:
			return seen, fmt.Errorf("waiting for %d task(s) to close: %w", pending, ctx.Err())
		case err != nil:
			if failures++; failures >= 10 {
				return seen, fmt.Errorf("grove ls failed 10 times in a row: %w", err)
			}
		default:
			failures = 0
			w.walls = append(w.walls, seen.Sub(began))
			if pending, err = closedTasks(ts, ids); err != nil || pending == 0 {
				return seen, err
			}
			if !deadline.IsZero() && seen.After(deadline) {
				return seen, fmt.Errorf("%d task(s) did not close within %s: %s", pending, w.settle, notClosed(ts, ids))
			}
		}
		select {
		case <-ctx.Done():
			return seen, fmt.Errorf("waiting for %d task(s) to close: %w", pending, ctx.Err())
		case <-time.After(w.interval):
		}
	}
}

// runGrove submits tasks through grove at concurrency c with closed loops
// (a worker runs `grove submit --wait` and submits its next task when that
// returns, the task applied); the daemon runs with --max-agents c. Wall is
// first submit → the last task's "closed" audit event (worktree removed),
// like the baseline's first task → last worktree removed; the closes are
// awaited with cw, after the last task is applied. closed, when not nil,
// is called once every task is seen closed, before the harness's own
// bookkeeping (a `grove show` per task, for the last "closed" event), so
// that a CPU meter stopped there charges grove only with the run itself.
func runGrove(ctx context.Context, g groveCLI, cw *closeWaiter, repo, benchDir string, tasks, c int, progress io.Writer, closed func()) (phaseResult, error) {
	var (
		next    atomic.Int64
		done    atomic.Int64
		resMu   sync.Mutex
		results []taskTimes
		errOnce sync.Once
		first   error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if closed != nil { // once, at the closes or on the way out
		closed = sync.OnceFunc(closed)
		defer closed()
	}
	fail := func(err error) { errOnce.Do(func() { first = err; cancel() }) }
	one := func() (taskTimes, error) {
		task, began, end, err := g.submitWait(ctx, repo, benchDir)
		if err != nil {
			return taskTimes{}, err
		}
		id := task.ID
		t := taskTimes{ID: id, Submit: began, E2E: end.Sub(began)}
		start, err := readStart(benchDir, id)
		if err != nil {
			return t, err
		}
		t.Start = start.Sub(began)
		return t, nil
	}
	began := time.Now()
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for ctx.Err() == nil {
				if int(next.Add(1)) > tasks {
					return
				}
				t, err := one()
				if err != nil {
					fail(fmt.Errorf("grove task: %w", err))
					return
				}
				resMu.Lock()
				results = append(results, t)
				resMu.Unlock()
				if n := done.Add(1); n%10 == 0 || int(n) == tasks {
					fmt.Fprintf(progress, "grove-bench:   grove %d/%d applied\n", n, tasks)
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return phaseResult{}, first
	}
	ids := make([]string, len(results))
	for i, t := range results {
		ids[i] = t.ID
	}
	seen, err := cw.waitClosed(ctx, ids)
	if closed != nil {
		closed()
	}
	if err != nil {
		return phaseResult{}, err
	}
	var last time.Time
	for _, id := range ids {
		at, err := taskEvents(ctx, g, id)
		if err != nil {
			return phaseResult{}, err
		}
		closedAt, ok := at["closed"]
		if !ok {
			return phaseResult{}, fmt.Errorf("task %s is closed but has no \"closed\" event", id)
		}
		if closedAt.After(last) {
			last = closedAt
		}
	}
	fmt.Fprintf(progress, "grove-bench:   grove all closed after %.2fs (last \"closed\" event; grove ls saw it %.0f ms later)\n",
		last.Sub(began).Seconds(), float64(seen.Sub(last))/float64(time.Millisecond))
	return phaseResult{Tasks: results, Wall: last.Sub(began)}, nil
}

// readStart reads the agent's start time (ns since the epoch) for task id.
func readStart(benchDir, id string) (time.Time, error) {
	b, err := os.ReadFile(filepath.Join(benchDir, "start-"+id))
	if err != nil {
		return time.Time{}, fmt.Errorf("agent start of %s: %w", id, err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("agent start of %s: %q is not `date +%%s%%N` output", id, b)
	}
	return time.Unix(0, ns), nil
}

// stageNames are the spans between a task's consecutive audit events, in
// pipeline order: from event a to event b.
var stageNames = []struct{ name, from, to string }{
	{"queue+create", "submitted", "worktree"}, // create_worktree picked up + CreateWorktree
	{"launch", "worktree", "started"},         // run_agent picked up + supervisor started
	{"agent", "started", "ended"},             // agent ran + exit noticed
	{"diff", "ended", "diff"},                 // diff picked up + commit + diff-tree
	{"apply", "diff", "applied"},              // apply picked up + merge-tree + ref + read-tree
	{"close", "applied", "closed"},            // close picked up + at-risk gate + remove
}

// taskEvents is when each kind of audit event first happened to task id,
// from `grove show --json` (the daemon's clock, millisecond resolution).
func taskEvents(ctx context.Context, g groveCLI, id string) (map[string]time.Time, error) {
	b, err := g.run(ctx, "", "show", id, "--json")
	if err != nil {
		return nil, err
	}
	var v struct {
		Events []struct {
			At   time.Time `json:"at"`
			Kind string    `json:"kind"`
		} `json:"events"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("grove show %s --json: %w", id, err)
	}
	at := map[string]time.Time{}
	for _, e := range v.Events {
		if _, ok := at[e.Kind]; !ok {
			at[e.Kind] = e.At
		}
	}
	return at, nil
}

// stageTimes collects, from `grove show --json` of each task, the time
// spent between its audit events (millisecond resolution), plus
// submit → "applied" event (e2eEvent), which does not depend on polling.
func stageTimes(ctx context.Context, g groveCLI, tasks []taskTimes) (map[string][]time.Duration, []time.Duration, error) {
	out := map[string][]time.Duration{}
	var e2e []time.Duration
	for _, t := range tasks {
		at, err := taskEvents(ctx, g, t.ID)
		if err != nil {
			return nil, nil, err
		}
		for _, s := range stageNames {
			a, okA := at[s.from]
			b, okB := at[s.to]
			if okA && okB {
				out[s.name] = append(out[s.name], b.Sub(a))
			}
		}
		if a, ok := at["applied"]; ok {
			e2e = append(e2e, a.Sub(t.Submit))
		}
	}
	return out, e2e, nil
}

// measureSubmits runs n `grove submit`s one after the other, each with the
// daemon idle: it waits for the previous task to close first (cw). They go
// to a small repository so the wait is short; submit does no work that
// grows with the repository (a few rev-parses and one SQLite transaction).
func measureSubmits(ctx context.Context, g groveCLI, cw *closeWaiter, repo, benchDir string, n int) ([]time.Duration, error) {
	var walls []time.Duration
	for range n {
		id, _, wall, err := g.submit(ctx, repo, benchDir, "auto")
		if err != nil {
			return nil, err
		}
		walls = append(walls, wall)
		if _, err := cw.waitClosed(ctx, []string{id}); err != nil {
			return nil, err
		}
	}
	return walls, nil
}

// measureLs runs `grove ls --json` n times one after the other (nothing
// else polling) and returns the wall times and the number of tasks listed.
func measureLs(ctx context.Context, g groveCLI, n int) ([]time.Duration, int, error) {
	var walls []time.Duration
	count := 0
	for range n {
		began := time.Now()
		ts, err := g.ls(ctx)
		if err != nil {
			return nil, 0, err
		}
		walls = append(walls, time.Since(began))
		count = len(ts)
	}
	return walls, count, nil
}
