package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// groveCLI runs grove subcommands on the bench home.
type groveCLI struct {
	r    runner
	bin  string
	home string
}

// run runs `grove --home <home> args...` in dir and returns its stdout.
func (g groveCLI) run(ctx context.Context, dir string, args ...string) ([]byte, error) {
	return output(g.r.cmd(ctx, dir, nil, g.bin, append([]string{"--home", g.home}, args...)...), nil)
}

// submit runs `grove submit --apply auto` of the bench agent on repo and
// returns the task id, when the process was started, and its wall time.
func (g groveCLI) submit(ctx context.Context, repo, benchDir string) (string, time.Time, time.Duration, error) {
	began := time.Now()
	out, err := g.run(ctx, repo, "submit", "--repo", repo, "--apply", "auto", "--timeout", "10m",
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

// lsTask is the part of `grove ls --json` the harness reads.
type lsTask struct {
	ID    string `json:"id"`
	State string `json:"state"`
	Error string `json:"error"`
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

// tracked is one submitted task as the poller has seen it.
type tracked struct {
	done     chan struct{} // closed when applied, closed or a failure state is first seen
	doneAt   time.Time     // end of the first `grove ls` showing applied or closed
	closedAt time.Time     // end of the first `grove ls` showing closed
	state    string
	err      string
}

// tracker polls `grove ls --json` (a process per poll, as a script would)
// and records when each tracked task first shows applied and closed.
type tracker struct {
	g        groveCLI
	interval time.Duration

	wake chan struct{} // a task was added

	mu      sync.Mutex
	tasks   map[string]*tracked
	pending int             // tracked tasks not yet closed or failed
	lsWalls []time.Duration // every poll's wall time, under load
}

func newTracker(g groveCLI, interval time.Duration) *tracker {
	return &tracker{g: g, interval: interval, tasks: map[string]*tracked{}, wake: make(chan struct{}, 1)}
}

// add starts tracking id.
func (t *tracker) add(id string) *tracked {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := &tracked{done: make(chan struct{})}
	t.tasks[id] = k
	t.pending++
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return k
}

// badStates end a bench task without its change landing. (review is never
// visible with --apply auto unless the apply was refused or the agent failed:
// diff moves review → applying in one transaction.)
var badStates = map[string]bool{"failed": true, "conflict": true, "canceled": true, "discarded": true, "review": true}

// run polls every interval until ctx ends, while some tracked task is
// not closed yet (so it does not load the box during baseline rounds).
// Twenty failed polls in a row end it with an error.
func (t *tracker) run(ctx context.Context) error {
	failures := 0
	for ctx.Err() == nil {
		t.mu.Lock()
		idle := t.pending == 0
		t.mu.Unlock()
		if idle {
			select {
			case <-t.wake:
			case <-ctx.Done():
				return nil
			}
			continue
		}
		began := time.Now()
		ts, err := t.g.ls(ctx)
		seen := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if failures++; failures >= 20 {
				return fmt.Errorf("grove ls failed 20 times in a row: %w", err)
			}
		} else {
			failures = 0
			t.update(ts, seen, seen.Sub(began))
		}
		select {
		case <-ctx.Done():
		case <-time.After(t.interval):
		}
	}
	return nil
}

func (t *tracker) update(ts []lsTask, seen time.Time, wall time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lsWalls = append(t.lsWalls, wall)
	for _, task := range ts {
		k := t.tasks[task.ID]
		if k == nil || !k.closedAt.IsZero() || k.err != "" {
			continue
		}
		k.state = task.State
		switch {
		case task.State == "applied" || task.State == "closed":
			if k.doneAt.IsZero() {
				k.doneAt = seen
				close(k.done)
			}
			if task.State == "closed" {
				k.closedAt = seen
				t.pending--
			}
		case badStates[task.State]:
			k.err = fmt.Sprintf("task %s ended in state %s: %s", task.ID, task.State, task.Error)
			t.pending--
			if k.doneAt.IsZero() {
				close(k.done)
			}
		}
	}
}

// wait returns when k is applied or closed, or an error if it failed.
func (t *tracker) wait(ctx context.Context, k *tracked) error {
	select {
	case <-k.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if k.err != "" {
		return errors.New(k.err)
	}
	return nil
}

// waitClosed returns when every id shows closed; it returns the latest
// closing time.
func (t *tracker) waitClosed(ctx context.Context, ids []string) (time.Time, error) {
	for {
		t.mu.Lock()
		var last time.Time
		pending := 0
		for _, id := range ids {
			k := t.tasks[id]
			if k.err != "" {
				t.mu.Unlock()
				return last, errors.New(k.err)
			}
			if k.closedAt.IsZero() {
				pending++
			} else if k.closedAt.After(last) {
				last = k.closedAt
			}
		}
		t.mu.Unlock()
		if pending == 0 {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("waiting for %d task(s) to close: %w", pending, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// pollWalls is a copy of the poll wall times so far.
func (t *tracker) pollWalls() []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]time.Duration(nil), t.lsWalls...)
}

// runGrove submits tasks through grove at concurrency c with closed loops
// (a worker submits its next task when its last one shows applied or
// closed); the daemon runs with --max-agents c. Wall is first submit → last
// task closed (worktree removed), like the baseline's.
func runGrove(ctx context.Context, g groveCLI, tr *tracker, repo, benchDir string, tasks, c int, progress io.Writer) (phaseResult, error) {
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
	fail := func(err error) { errOnce.Do(func() { first = err; cancel() }) }
	one := func() (taskTimes, error) {
		id, began, _, err := g.submit(ctx, repo, benchDir)
		if err != nil {
			return taskTimes{}, err
		}
		k := tr.add(id)
		if err := tr.wait(ctx, k); err != nil {
			return taskTimes{}, err
		}
		tr.mu.Lock()
		doneAt := k.doneAt
		tr.mu.Unlock()
		t := taskTimes{ID: id, Submit: began, E2E: doneAt.Sub(began)}
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
	last, err := tr.waitClosed(ctx, ids)
	if err != nil {
		return phaseResult{}, err
	}
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

// stageTimes collects, from `grove show --json` of each task, the time
// spent between its audit events (millisecond resolution), plus
// submit → "applied" event (e2eEvent), which does not depend on polling.
func stageTimes(ctx context.Context, g groveCLI, tasks []taskTimes) (map[string][]time.Duration, []time.Duration, error) {
	out := map[string][]time.Duration{}
	var e2e []time.Duration
	for _, t := range tasks {
		b, err := g.run(ctx, "", "show", t.ID, "--json")
		if err != nil {
			return nil, nil, err
		}
		var v struct {
			Events []struct {
				At   time.Time `json:"at"`
				Kind string    `json:"kind"`
			} `json:"events"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, nil, fmt.Errorf("grove show %s --json: %w", t.ID, err)
		}
		at := map[string]time.Time{}
		for _, e := range v.Events {
			if _, ok := at[e.Kind]; !ok {
				at[e.Kind] = e.At
			}
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
// daemon idle: it waits for the previous task to close first. They go to
// a small repository so the wait is short; submit does no work that grows
// with the repository (a few rev-parses and one SQLite transaction).
func measureSubmits(ctx context.Context, g groveCLI, tr *tracker, repo, benchDir string, n int) ([]time.Duration, error) {
	var walls []time.Duration
	for range n {
		id, _, wall, err := g.submit(ctx, repo, benchDir)
		if err != nil {
			return nil, err
		}
		walls = append(walls, wall)
		tr.add(id)
		if _, err := tr.waitClosed(ctx, []string{id}); err != nil {
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
