package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// TestBenchSmall builds grove and runs the whole harness on a tiny
// repository, checking the JSON report carries the figures the issue names.
func TestBenchSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grove and runs a daemon")
	}
	is := is.New(t)
	tmp := t.TempDir()
	bin := buildGrove(t, tmp)
	var stdout, stderr bytes.Buffer
	code := run([]string{"--grove", bin, "--dir", tmp, "--files", "50", "--tasks", "4", "--concurrency", "2",
		"--submits", "3", "--ls-runs", "3", "--sandbox-probes", "2", "--timeout", "5m", "--json"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	var rep map[string]any
	is.NoErr(json.Unmarshal(stdout.Bytes(), &rep))
	// The start with and without the sandbox, each measured.
	for _, k := range []string{"sandbox_start_p50_ms", "nosandbox_start_p50_ms", "sandbox_probes"} {
		if v, ok := rep[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number (%v)", k, rep[k], rep["sandbox_note"])
		}
	}
	for _, k := range []string{"throughput_ratio", "start_p50_ms", "start_p99_ms", "baseline_create_p50_ms",
		"e2e_p50_ms", "e2e_p99_ms", "grove_tasks_per_s", "baseline_tasks_per_s", "submit_wall_p50_ms",
		"ls_wall_p50_ms", "ls_tasks", "daemon_rss_mb", "files", "tasks", "concurrency", "e2e_event_p50_ms",
		"ls_polls", "ls_poll_p50_ms", "grove_wall_s"} {
		v, ok := rep[k].(float64)
		if !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, rep[k])
		}
	}
	is.Equal(rep["files"], 50.0)
	is.Equal(rep["tasks"], 4.0)
	is.Equal(rep["concurrency"], 2.0)
	is.Equal(rep["ls_tasks"], 4.0+3.0) // the run's tasks and the submit samples
	// `grove wait` returns after the task is applied, so never before its
	// "applied" event.
	if w, ev := rep["e2e_p50_ms"].(float64), rep["e2e_event_p50_ms"].(float64); w < ev {
		t.Errorf("e2e_p50_ms %v < e2e_event_p50_ms %v: grove wait returned before the task was applied", w, ev)
	}
	stages, _ := rep["stages_p50_ms"].(map[string]any)
	for _, s := range stageNames {
		if v, _ := stages[s.name].(float64); v < 0 {
			t.Errorf("stage %s = %v", s.name, v)
		}
	}
	for _, k := range []string{"warm_start_p50_ms", "warm_start_p99_ms", "warm_probes", "saturated_warm_start_p50_ms"} {
		if _, ok := rep[k]; ok {
			t.Errorf("%s reported without --warm", k)
		}
	}
}

// buildGrove builds ../grove into dir and returns its path.
func buildGrove(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "grove")
	build := exec.Command("go", "build", "-o", bin, "../grove")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ../grove: %v\n%s", err, out)
	}
	return bin
}

// TestBenchWarm runs the harness with --warm on a tiny repository: the
// warm probes run, each takes a pool worktree, and the saturated run's
// figure is kept under its own name.
func TestBenchWarm(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grove and runs a daemon")
	}
	is := is.New(t)
	tmp := t.TempDir()
	bin := buildGrove(t, tmp)
	var stdout, stderr bytes.Buffer
	code := run([]string{"--grove", bin, "--dir", tmp, "--files", "50", "--tasks", "4", "--concurrency", "2",
		"--warm", "2", "--warm-settle", "0s", "--warm-probes", "3", "--rounds", "1",
		"--submits", "1", "--ls-runs", "1", "--sandbox-probes", "0", "--timeout", "3m", "--json"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	var rep map[string]any
	is.NoErr(json.Unmarshal(stdout.Bytes(), &rep))
	is.Equal(rep["warm_pool"], "enabled")
	for _, k := range []string{"warm_start_p50_ms", "warm_start_p99_ms", "saturated_warm_start_p50_ms", "start_p50_ms"} {
		v, ok := rep[k].(float64)
		if !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, rep[k])
		}
	}
	is.Equal(rep["saturated_warm_start_p50_ms"], rep["start_p50_ms"])
	is.Equal(rep["warm_probes"], 3.0)
	if rep["warm_probe_hits"] != 3.0 {
		t.Errorf("warm_probe_hits = %v, want 3: a probe did not take a pool worktree\nstderr:\n%s", rep["warm_probe_hits"], stderr.String())
	}
	if _, ok := rep["warm_probe_note"]; ok {
		t.Errorf("warm_probe_note = %v", rep["warm_probe_note"])
	}
	stages, _ := rep["warm_stages_p50_ms"].(map[string]any)
	for _, s := range []string{"queue+create", "launch", "agent", "diff"} {
		if _, ok := stages[s].(float64); !ok {
			t.Errorf("warm_stages_p50_ms[%s] missing: %v", s, rep["warm_stages_p50_ms"])
		}
	}
	// 4 tasks, 3 probes (discarded and closed), 1 submit sample.
	is.Equal(rep["ls_tasks"], 8.0)
}

func TestCountPoolWorktrees(t *testing.T) {
	is := is.New(t)
	const tip, old = "aaaa", "bbbb"
	porcelain := `worktree /r
HEAD aaaa
branch refs/heads/main

worktree /h/p-1
HEAD aaaa
branch refs/heads/grove/pool/1

worktree /h/p-2
HEAD bbbb
branch refs/heads/grove/pool/2

worktree /h/t1
HEAD aaaa
branch refs/heads/grove/t1

worktree /h/p-3
HEAD aaaa
branch refs/heads/grove/pool/3
prunable gitdir file points to non-existent location

worktree /h/p-4
HEAD aaaa
branch refs/heads/grove/pool/4
`
	is.Equal(countPoolWorktrees(porcelain, tip), 2) // p-1 and p-4
	is.Equal(countPoolWorktrees(porcelain, old), 1) // p-2
	is.Equal(countPoolWorktrees("", tip), 0)
}

// TestUsage checks flag errors exit 2 and -h exits 0.
func TestUsage(t *testing.T) {
	is := is.New(t)
	var out, errb bytes.Buffer
	is.Equal(run([]string{"--tasks", "0"}, &out, &errb), 2)
	is.Equal(run([]string{"--nope"}, &out, &errb), 2)
	is.Equal(run([]string{"extra"}, &out, &errb), 2)
	is.Equal(run([]string{"-h"}, &out, &errb), 0)
}

func TestFilePath(t *testing.T) {
	is := is.New(t)
	is.Equal(filePath(0, 10), "src/d0/f000000.txt")
	is.Equal(filePath(17, 10000), "src/d0/d0/d1/f000017.txt")
	seen := map[string]bool{}
	for i := range 5000 {
		p := filePath(i, 5000)
		is.True(!seen[p]) // unique
		seen[p] = true
	}
}

func TestWaitOutcome(t *testing.T) {
	is := is.New(t)
	exit1 := errors.New("exit status 1")
	task, err := waitOutcome("t1", []byte(`[{"id":"t1","state":"applied"}]`), nil)
	is.NoErr(err)
	is.Equal(task.State, "applied")
	for _, c := range []struct {
		out    string
		runErr error
		want   string
	}{
		{`[{"id":"t1","state":"failed","error":"agent exited 3"}]`, exit1, "ended in state failed: agent exited 3"},
		{`[{"id":"t1","state":"conflict","error":"merge conflict"}]`, exit1, "ended in state conflict: merge conflict"},
		{`[{"id":"t1","state":"review","error":"apply refused"}]`, nil, "ended in state review"},
		{`[{"id":"t1","state":"closed"}]`, nil, "ended in state closed"}, // closed without applying
		{`[{"id":"t1","state":"applied"}]`, exit1, "exit status 1"},
		{`[{"id":"t2","state":"applied"}]`, nil, "not that task"},
		{`[]`, nil, "not that task"},
		{``, exit1, "exit status 1"},
	} {
		_, err := waitOutcome("t1", []byte(c.out), c.runErr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("waitOutcome(%s, %v) = %v, want an error with %q", c.out, c.runErr, err, c.want)
		}
	}
}

func TestClosedTasks(t *testing.T) {
	is := is.New(t)
	ls := []lsTask{{ID: "a", State: "applied", Worktree: "removed"}, {ID: "b", State: "applied", Worktree: "ready"},
		{ID: "c", State: "running"}, {ID: "d", State: "failed", Error: "boom"}, {ID: "e", State: "applied", Worktree: "removed"}}
	n, err := closedTasks(ls, []string{"a", "e"})
	is.NoErr(err)
	is.Equal(n, 0)
	n, err = closedTasks(ls, []string{"a", "b", "c", "x"}) // x not listed yet
	is.NoErr(err)
	is.Equal(n, 3)
	_, err = closedTasks(ls, []string{"a", "d"})
	is.True(err != nil && strings.Contains(err.Error(), "task d ended in state failed: boom"))
}

// fakeGrove writes a grove stand-in that answers `wait` with wait.json
// (exit code in wait.code) and `ls` with ls-1.json, ls-2.json, ... one per
// call (the last one again once they run out), and returns a groveCLI on it.
func fakeGrove(t *testing.T, files map[string]string) (groveCLI, string) {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := `#!/bin/sh
cd "$(dirname "$0")"
shift 2 # --home H
case "$1" in
wait) [ -f wait.hang ] && exec sleep 60; cat wait.json; exit "$(cat wait.code)" ;;
show) cat show.json ;;
ls)
	n=$(($(cat ls.n 2>/dev/null || echo 0) + 1))
	echo $n > ls.n
	[ -f ls-$n.json ] || n=$(ls ls-*.json | wc -l)
	cat ls-$n.json ;;
*) echo "fake grove: $*" >&2; exit 2 ;;
esac
`
	bin := filepath.Join(dir, "grove")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return groveCLI{r: runner{env: benchEnv()}, bin: bin, home: filepath.Join(dir, "home")}, dir
}

// TestGroveWaitFailed: a task `grove wait` reports failed (exit 1) is an
// error naming its state and error, and an applied one is not.
func TestGroveWaitFailed(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	g, dir := fakeGrove(t, map[string]string{
		"wait.json": `[{"id":"t1","state":"failed","error":"agent exited 3","exit_code":3}]`, "wait.code": "1"})
	began := time.Now()
	_, end, err := g.wait(ctx, "t1")
	is.True(err != nil && strings.Contains(err.Error(), "task t1 ended in state failed: agent exited 3"))
	is.True(!end.Before(began))

	is.NoErr(os.WriteFile(filepath.Join(dir, "wait.json"), []byte(`[{"id":"t1","state":"applied"}]`), 0o644))
	is.NoErr(os.WriteFile(filepath.Join(dir, "wait.code"), []byte("0"), 0o644))
	task, _, err := g.wait(ctx, "t1")
	is.NoErr(err)
	is.Equal(task.State, "applied")
}

// TestWaitClosed: the close waiter polls `grove ls` until every task is
// closed, and fails on a task that ended badly.
func TestWaitClosed(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, _ := fakeGrove(t, map[string]string{
		"ls-1.json": `[{"id":"a","state":"applied"},{"id":"b","state":"running"}]`,
		"ls-2.json": `[{"id":"a","state":"applied","worktree":"removed"},{"id":"b","state":"applied","worktree":"ready"}]`,
		"ls-3.json": `[{"id":"a","state":"applied","worktree":"removed"},{"id":"b","state":"applied","worktree":"removed"}]`,
	})
	cw := &closeWaiter{g: g, interval: time.Millisecond}
	_, err := cw.waitClosed(ctx, []string{"a", "b"})
	is.NoErr(err)
	is.Equal(len(cw.walls), 3) // one poll per listing, none after

	g, _ = fakeGrove(t, map[string]string{
		"ls-1.json": `[{"id":"a","state":"applied"}]`,
		"ls-2.json": `[{"id":"a","state":"failed","error":"close failed"}]`,
	})
	cw = &closeWaiter{g: g, interval: time.Millisecond}
	_, err = cw.waitClosed(ctx, []string{"a"})
	is.True(err != nil && strings.Contains(err.Error(), "task a ended in state failed: close failed"))
}

// TestUnsettledFailsTheRun: a task that does not settle within --settle
// fails the run with its id and state (issue 15: a stuck close hung the
// bench for 10 minutes), for `grove wait` and for the close waiter.
func TestUnsettledFailsTheRun(t *testing.T) {
	is := is.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, _ := fakeGrove(t, map[string]string{
		"wait.hang": "", "wait.json": `[]`, "wait.code": "0",
		"show.json": `{"id":"t1","state":"running","worktree":"ready"}`,
	})
	g.settle = 200 * time.Millisecond
	began := time.Now()
	_, _, err := g.wait(ctx, "t1")
	is.True(err != nil && strings.Contains(err.Error(), "task t1 did not settle within 200ms: it is running (worktree ready)"))
	is.True(time.Since(began) < 20*time.Second) // the hanging wait was killed

	g, _ = fakeGrove(t, map[string]string{
		"ls-1.json": `[{"id":"a","state":"applied","worktree":"removed"},{"id":"b","state":"applied","worktree":"ready"}]`,
	})
	cw := &closeWaiter{g: g, interval: 10 * time.Millisecond, settle: 100 * time.Millisecond}
	_, err = cw.waitClosed(ctx, []string{"a", "b"})
	is.True(err != nil && strings.Contains(err.Error(), "1 task(s) did not close within 100ms: task b is applied (worktree ready)"))
}

// TestBaselineApplies: with apply, each baseline task's commit lands on
// the main checkout's branch (its file there, one commit per task, the
// checkout clean), its worktree and branch are gone, and the step is
// timed; without apply the main checkout does not move.
func TestBaselineApplies(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	tmp := t.TempDir()
	r := runner{env: benchEnv()}
	repo := filepath.Join(tmp, "repo")
	base, err := buildRepo(ctx, r, repo, 20)
	is.NoErr(err)
	marks := filepath.Join(tmp, "marks")
	is.NoErr(os.MkdirAll(marks, 0o755))
	wtRoot := filepath.Join(tmp, "wt")

	res, err := runBaseline(ctx, r, repo, base, wtRoot, marks, 0, 3, 2, false, io.Discard)
	is.NoErr(err)
	is.Equal(len(res.Tasks), 3)
	head, err := r.git(ctx, repo, "rev-parse", "HEAD")
	is.NoErr(err)
	is.Equal(strings.TrimSpace(string(head)), base) // no apply: main stays

	res, err = runBaseline(ctx, r, repo, base, wtRoot, marks, 3, 3, 2, true, io.Discard)
	is.NoErr(err)
	is.Equal(len(res.Tasks), 3)
	for _, tk := range res.Tasks {
		is.True(tk.Apply > 0)
		b, err := os.ReadFile(filepath.Join(repo, "bench-"+tk.ID+".txt"))
		is.NoErr(err)
		is.Equal(strings.TrimSpace(string(b)), tk.ID) // the task's file, in the main checkout
	}
	count, err := r.git(ctx, repo, "rev-list", "--count", base+"..HEAD")
	is.NoErr(err)
	is.Equal(strings.TrimSpace(string(count)), "3") // one commit per task
	status, err := r.git(ctx, repo, "status", "--porcelain")
	is.NoErr(err)
	is.Equal(string(status), "") // clean: nothing half-applied
	branches, err := r.git(ctx, repo, "branch", "--list", "bench/*")
	is.NoErr(err)
	is.Equal(string(branches), "") // every task's branch deleted
}
