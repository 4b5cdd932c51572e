package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// agentScript is the trivial agent both sides run with `sh -c`: it records
// when it started (ns since the epoch, in $BENCH_DIR/start-<task>) and
// writes one new file of its own, so no two applies conflict.
const agentScript = `date +%s%N > "$BENCH_DIR/start-$GROVE_TASK_ID" && echo "$GROVE_TASK_ID" > "bench-$GROVE_TASK_ID.txt"`

// taskTimes are one task's measurements.
type taskTimes struct {
	ID     string
	Submit time.Time     // the task began (baseline) or `grove submit` was started (grove)
	Start  time.Duration // Submit → the agent's recorded start
	Create time.Duration // baseline: Submit → worktree ready (mutex wait included)
	E2E    time.Duration // Submit → done

	// Baseline steps: `git worktree add` alone (no mutex wait), the agent,
	// add+commit+diff-tree, the cherry-pick onto the main checkout (with
	// --baseline-apply only), and worktree remove + branch -D (mutex wait
	// included in the last two).
	AddGit, Agent, Commit, Apply, Remove time.Duration
}

// phaseResult is what one side measured.
type phaseResult struct {
	Tasks []taskTimes
	Wall  time.Duration // first task began → last task fully done (worktree gone), summed over rounds
}

// add merges another round's result.
func (p *phaseResult) add(q phaseResult) {
	p.Tasks = append(p.Tasks, q.Tasks...)
	p.Wall += q.Wall
}

// runBaseline does each task's git work directly, at concurrency c with
// closed loops (a worker starts its next task when its last one is done):
//
//	git worktree add -b <branch> <path> <base>   (under a mutex)
//	sh -c agentScript                            (in the worktree)
//	git add -A; git commit; git diff-tree -p
//	git cherry-pick <branch>                     (apply only: in the main checkout, under the mutex)
//	git worktree remove <path>; git branch -D    (under the mutex)
//
// Plain git must serialise what touches the shared worktree list and refs
// (worktree add/remove, branch -D) and the main checkout: concurrent ones
// fail on lock files. With apply, each task's commit lands on the main
// checkout's branch as grove's --apply auto does (one process doing the
// merge, the commit and the checkout's update, where grove runs
// merge-tree, commit-tree and read-tree).
//
// Task ids are b<first+1> .. b<first+tasks>, so rounds do not collide.
func runBaseline(ctx context.Context, r runner, repo, base, wtRoot, benchDir string, first, tasks, c int, apply bool, progress io.Writer) (phaseResult, error) {
	var (
		mu       sync.Mutex // plain git's serialisation
		next     atomic.Int64
		done     atomic.Int64
		resMu    sync.Mutex
		results  []taskTimes
		errOnce  sync.Once
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	one := func(i int) (taskTimes, error) {
		id := fmt.Sprintf("b%04d", i)
		path := filepath.Join(wtRoot, id)
		branch := "bench/" + id
		t := taskTimes{ID: id, Submit: time.Now()}
		mu.Lock()
		locked := time.Now()
		_, err := r.git(ctx, repo, "worktree", "add", "-q", "-b", branch, path, base)
		t.AddGit = time.Since(locked)
		mu.Unlock()
		if err != nil {
			return t, err
		}
		t.Create = time.Since(t.Submit)
		step := time.Now()
		agent := r.cmd(ctx, path, []string{"GROVE_TASK_ID=" + id, "BENCH_DIR=" + benchDir}, "sh", "-c", agentScript)
		if _, err := output(agent, nil); err != nil {
			return t, err
		}
		t.Agent = time.Since(step)
		step = time.Now()
		if _, err := r.git(ctx, path, "add", "-A"); err != nil {
			return t, err
		}
		if _, err := r.git(ctx, path, "commit", "-q", "--no-verify", "-m", "bench task "+id); err != nil {
			return t, err
		}
		patch, err := r.git(ctx, path, "diff-tree", "-p", "--binary", "--full-index", "HEAD^", "HEAD")
		if err != nil {
			return t, err
		}
		if len(patch) == 0 {
			return t, fmt.Errorf("baseline task %s: empty diff", id)
		}
		t.Commit = time.Since(step)
		if apply {
			step = time.Now()
			mu.Lock()
			_, err = r.git(ctx, repo, "cherry-pick", "--no-edit", "--end-of-options", branch)
			if err != nil { // leave the main checkout as it was for the next task (and --keep)
				_, _ = r.git(context.WithoutCancel(ctx), repo, "cherry-pick", "--abort")
			}
			mu.Unlock()
			if err != nil {
				return t, fmt.Errorf("baseline task %s: cherry-pick: %w", id, err)
			}
			t.Apply = time.Since(step)
		}
		step = time.Now()
		mu.Lock()
		_, err = r.git(ctx, repo, "worktree", "remove", path)
		if err == nil {
			_, err = r.git(ctx, repo, "branch", "-q", "-D", branch)
		}
		mu.Unlock()
		if err != nil {
			return t, err
		}
		t.Remove = time.Since(step)
		t.E2E = time.Since(t.Submit)
		start, err := readStart(benchDir, id)
		if err != nil {
			return t, err
		}
		t.Start = start.Sub(t.Submit)
		return t, nil
	}
	began := time.Now()
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1))
				if i > tasks {
					return
				}
				t, err := one(first + i)
				if err != nil {
					fail(fmt.Errorf("baseline task %d: %w", i, err))
					return
				}
				resMu.Lock()
				results = append(results, t)
				resMu.Unlock()
				if n := done.Add(1); n%10 == 0 || int(n) == tasks {
					fmt.Fprintf(progress, "grove-bench:   baseline %d/%d\n", n, tasks)
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return phaseResult{}, firstErr
	}
	return phaseResult{Tasks: results, Wall: time.Since(began)}, nil
}
