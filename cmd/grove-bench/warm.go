package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// warmProbeBudget bounds the whole warm-probe phase (pool waits and probe
// tasks). When it runs out the probes done so far are reported, with a note.
const warmProbeBudget = 5 * time.Minute

// poolSteadyFor is how long every poll must see the pool full at the tip
// before a probe is submitted: the probes measure a daemon at rest. One
// full poll is not enough, for two reasons:
//
//   - The poll's two views (see waitPool) are read one after the other,
//     and doctor counts entries in state pool whatever their base. Right
//     after the tip moves, a doctor count read before the pass took the
//     entries and a git listing read after it moved them can both say N,
//     although the pass records each new base a few milliseconds after the
//     move (the entry is pool_moving meanwhile). A later poll reads the
//     settled state.
//   - A pass that just created entries runs once more to confirm the pool
//     is settled, taking each entry (pool_moving: unclaimable) for a few
//     milliseconds; with --warm 1, a probe claiming then would create its
//     own worktree.
//
// A fill request racing a pass is no longer a reason: pool_fill jobs are
// not unique, and a request during a running pass makes that pass run
// again, so the fill a probe's claim asks for is never dropped. 300 ms is
// three polls.
const poolSteadyFor = 300 * time.Millisecond

// probeResult is what the warm probes measured.
type probeResult struct {
	Tasks []taskTimes // Start: `grove submit` started → the agent's recorded start
	Warm  int         // probes the daemon logged as "worktree ready (warm)"
	Note  string      // why fewer probes than asked ran ("" if all did)
}

// runWarmProbes measures the warm case: a task whose base is the
// commit of a ready pool worktree. For each of n probes it waits until the
// daemon's pool holds warm ready worktrees at the tip of repo's default
// branch (see waitPool), submits one task with --apply manual (so the tip
// does not move), waits for its agent and diff, discards it and waits until
// it is closed (its worktree removed). Nothing else runs meanwhile (the
// harness's `grove ls` polls run only while a phase awaits its closes).
//
// Running out of warmProbeBudget is not an error: the probes done so far
// are returned with a Note. A failed task or grove command is.
func runWarmProbes(ctx context.Context, g groveCLI, repo, benchDir, daemonLog string, warm, n int, budget time.Duration, progress io.Writer) (probeResult, error) {
	var res probeResult
	if n <= 0 {
		return res, nil
	}
	logf := func(format string, args ...any) { fmt.Fprintf(progress, "grove-bench:   "+format+"\n", args...) }
	pctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	stopped := func(doing string, err error) (probeResult, error) {
		if ctx.Err() == nil && pctx.Err() != nil { // the budget ran out, not the run
			err = errors.Join(err, context.Cause(pctx))
			res.Note = fmt.Sprintf("stopped after %d of %d probes: %s went past the %s budget (%v)", len(res.Tasks), n, doing, budget, err)
			logf("warm probes: %s", res.Note)
			return res, nil
		}
		return res, fmt.Errorf("warm probe %d/%d: %s: %w", len(res.Tasks)+1, n, doing, err)
	}
	for i := 1; i <= n; i++ {
		waited := time.Now()
		if err := waitPool(pctx, g, repo, warm, func(format string, args ...any) {
			logf("warm probe %d/%d: "+format, append([]any{i, n}, args...)...)
		}); err != nil {
			return stopped("waiting for the pool", err)
		}
		poolWait := time.Since(waited)
		id, began, _, err := g.submit(pctx, repo, benchDir, "manual")
		if err != nil {
			return stopped("submit", err)
		}
		if err := waitStartFile(pctx, g, benchDir, id); err != nil {
			return stopped("waiting for the agent of "+id, err)
		}
		if _, err := g.run(pctx, "", "wait", id); err != nil {
			return stopped("grove wait "+id, err)
		}
		if st, _, err := g.taskState(pctx, id); err != nil {
			return stopped("grove show "+id, err)
		} else if st != "review" {
			return stopped("checking "+id, fmt.Errorf("task %s is %s after its agent and diff, want review", id, st))
		}
		if _, err := g.run(pctx, "", "discard", id); err != nil {
			return stopped("grove discard "+id, err)
		}
		if err := waitRemoved(pctx, g, id, "discarded"); err != nil {
			return stopped("waiting for "+id+" to close", err)
		}
		start, err := readStart(benchDir, id)
		if err != nil {
			return res, err
		}
		t := taskTimes{ID: id, Submit: began, Start: start.Sub(began)}
		res.Tasks = append(res.Tasks, t)
		how := "cold: it created its own worktree, see the daemon log (--keep)"
		if warmStarted(daemonLog, id) {
			res.Warm++
			how = "took a warm worktree"
		}
		logf("warm probe %d/%d: %s started in %.0f ms (%s; pool full and steady after %.1fs)",
			i, n, id, float64(t.Start)/float64(time.Millisecond), how, poolWait.Seconds())
	}
	return res, nil
}

// waitPool polls until the daemon's pool holds want ready worktrees at the
// tip of repo's HEAD, in every poll for poolSteadyFor. Two read-only views
// must agree:
//
//   - `grove doctor --json`, check "warm pool": "N ready worktree(s)", the
//     database's count of entries in state pool (what a task can claim),
//     over all repositories; the probes run before any other repository
//     has a pool (measureSubmits' small repository comes later);
//   - `git worktree list --porcelain` of repo: worktrees on a
//     grove/pool/* branch whose HEAD is the tip (so they are at the
//     current tip, which doctor does not say).
//
// It logs progress every 5 s through logf.
func waitPool(ctx context.Context, g groveCLI, repo string, want int, logf func(string, ...any)) error {
	began := time.Now()
	lastLog := began
	var fullSince time.Time // zero: not full at the last poll
	var db, atTip int
	for {
		var err error
		db, err = g.poolReady(ctx)
		if err != nil {
			return err
		}
		atTip, err = poolAtTip(ctx, g.r, repo)
		if err != nil {
			return err
		}
		switch {
		case db < want || atTip < want:
			fullSince = time.Time{}
		case fullSince.IsZero():
			fullSince = time.Now()
		case time.Since(fullSince) >= poolSteadyFor:
			return nil
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			logf("waiting for the pool (%s): %d ready (doctor), %d at the tip (git), want %d",
				time.Since(began).Round(time.Second), db, atTip, want)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pool held %d ready (doctor), %d at the tip (git), want %d: %w", db, atTip, want, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// poolCountRE reads the "warm pool" check of `grove doctor`.
var poolCountRE = regexp.MustCompile(`^(\d+) ready worktree`)

// poolReady is the number of ready warm-pool worktrees `grove doctor --json`
// reports (all repositories). doctor exits 1 when it finds a problem
// elsewhere (e.g. little disk space); its JSON is still read.
func (g groveCLI) poolReady(ctx context.Context) (int, error) {
	out, runErr := g.run(ctx, "", "doctor", "--json")
	var rep struct {
		Checks []struct {
			Name    string `json:"name"`
			Message string `json:"message"`
		} `json:"checks"`
	}
	if err := json.Unmarshal(out, &rep); err != nil || len(rep.Checks) == 0 {
		if runErr != nil {
			return 0, runErr
		}
		return 0, fmt.Errorf("grove doctor --json: no checks in %q", clipLines(string(out), 3))
	}
	for _, c := range rep.Checks {
		if c.Name != "warm pool" {
			continue
		}
		m := poolCountRE.FindStringSubmatch(c.Message)
		if m == nil {
			return 0, fmt.Errorf("grove doctor --json: warm pool check %q has no count", c.Message)
		}
		return strconv.Atoi(m[1])
	}
	if runErr != nil {
		return 0, runErr
	}
	return 0, errors.New("grove doctor --json has no \"warm pool\" check (does this grove have a warm pool?)")
}

// poolAtTip counts repo's worktrees on a grove/pool/* branch whose HEAD is
// the commit of repo's HEAD (the default branch the pool follows).
func poolAtTip(ctx context.Context, r runner, repo string) (int, error) {
	tipOut, err := r.git(ctx, repo, "rev-parse", "--verify", "HEAD")
	if err != nil {
		return 0, err
	}
	tip := strings.TrimSpace(string(tipOut))
	out, err := r.git(ctx, repo, "worktree", "list", "--porcelain")
	if err != nil {
		return 0, err
	}
	return countPoolWorktrees(string(out), tip), nil
}

// countPoolWorktrees counts the records of `git worktree list --porcelain`
// on a grove/pool/* branch at commit tip (prunable ones, whose directory is
// gone, excepted).
func countPoolWorktrees(porcelain, tip string) int {
	n := 0
	for rec := range strings.SplitSeq(porcelain, "\n\n") {
		var head, branch string
		prunable := false
		for line := range strings.Lines(rec) {
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "HEAD "):
				head = strings.TrimPrefix(line, "HEAD ")
			case strings.HasPrefix(line, "branch "):
				branch = strings.TrimPrefix(line, "branch ")
			case line == "prunable" || strings.HasPrefix(line, "prunable "):
				prunable = true
			}
		}
		if !prunable && head == tip && strings.HasPrefix(branch, "refs/heads/grove/pool/") {
			n++
		}
	}
	return n
}

// finished are task states a probe never leaves on its own.
var finished = map[string]bool{"failed": true, "canceled": true, "conflict": true, "discarded": true, "closed": true, "applied": true}

// waitStartFile waits for the agent of task id to create its start file
// (a stat every 5 ms, so nothing but the daemon competes with the start);
// every 500 ms it also checks that the task has not ended without it.
func waitStartFile(ctx context.Context, g groveCLI, benchDir, id string) error {
	path := filepath.Join(benchDir, "start-"+id)
	lastCheck := time.Now()
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Since(lastCheck) >= 500*time.Millisecond {
			lastCheck = time.Now()
			st, _, err := g.taskState(ctx, id)
			if err != nil {
				return err
			}
			if finished[st] || st == "review" {
				if _, err := os.Stat(path); err == nil {
					return nil
				}
				return fmt.Errorf("task %s is %s and its agent never started", id, st)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// taskState is the task's state and its worktree's from `grove show ID
// --json`.
func (g groveCLI) taskState(ctx context.Context, id string) (state, worktree string, err error) {
	out, err := g.run(ctx, "", "show", id, "--json")
	if err != nil {
		return "", "", err
	}
	var v struct {
		State    string `json:"state"`
		Error    string `json:"error"`
		Worktree string `json:"worktree"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return "", "", fmt.Errorf("grove show %s --json: %w", id, err)
	}
	return v.State, v.Worktree, nil
}

// waitRemoved polls `grove show --json` until task id is in state want
// with its worktree removed; any other finished state is an error, and so
// is a wait longer than g.settle.
func waitRemoved(ctx context.Context, g groveCLI, id, want string) error {
	began := time.Now()
	for {
		if g.settle > 0 && time.Since(began) > g.settle {
			return g.unsettled(ctx, id, "close", g.settle)
		}
		st, wt, err := g.taskState(ctx, id)
		if err != nil {
			return err
		}
		if st == want && wt == "removed" {
			return nil
		}
		if finished[st] && st != want {
			return fmt.Errorf("task %s is %s, want %s", id, st, want)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("task %s still %s: %w", id, st, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// warmStarted reports whether the daemon's JSON log says task id took a
// warm-pool worktree ("worktree ready (warm)").
func warmStarted(logPath, id string) bool {
	f, err := os.Open(logPath)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"worktree ready (warm)"`)) || !bytes.Contains(line, []byte(id)) {
			continue
		}
		var rec struct {
			Msg  string `json:"msg"`
			Task string `json:"task"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == "worktree ready (warm)" && rec.Task == id {
			return true
		}
	}
	return false
}
