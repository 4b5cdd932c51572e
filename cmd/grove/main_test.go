package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
	"github.com/grove-dev/grove/store/pgtest"
)

func TestMain(m *testing.M) {
	testscript.Main(pgtest.M(m), map[string]func(){
		"grove":          func() { os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
		"grove-testhttp": testHTTPMain, // a tiny service for session tests (session_test.go)
	})
}

// slow scales deadlines on a loaded CI box.
func slow(d time.Duration) time.Duration {
	if os.Getenv("CI") != "" {
		return 3 * d
	}
	return d
}

func TestScripts(t *testing.T) {
	testscript.Run(t, scriptParams(t, "testdata"))
}

func scriptParams(t *testing.T, dir string) testscript.Params {
	return testscript.Params{
		Dir:                 dir,
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			work := env.WorkDir
			env.Setenv("GROVE_HOME", filepath.Join(work, "home"))
			env.Setenv("HOME", filepath.Join(work, "userhome"))
			env.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
			env.Setenv("GIT_CONFIG_NOSYSTEM", "1")
			env.Setenv("GIT_AUTHOR_NAME", "Test Author")
			env.Setenv("GIT_AUTHOR_EMAIL", "author@example.com")
			env.Setenv("GIT_COMMITTER_NAME", "Test Author")
			env.Setenv("GIT_COMMITTER_EMAIL", "author@example.com")
			env.Setenv("CI", os.Getenv("CI"))
			// Agents of these scripts write marks in $WORK, outside their
			// worktrees: the sandbox lets them (sandbox_test.go tests it).
			env.Setenv("GROVE_ALLOW_WRITE", work)
			// A -race binary pauses 1 s at every exit otherwise.
			env.Setenv("GORACE", "atexit_sleep_ms=0")
			env.Defer(func() {
				if pids := killStrays(work); len(pids) > 0 {
					t.Errorf("%s: stray processes left behind and killed: %v", filepath.Base(work), pids)
				}
			})
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkrepo":    cmdMkrepo,
			"capture":   cmdCapture,
			"waitstate": cmdWaitState,
			"waitfile":  cmdWaitFile,
			"waitgone":  cmdWaitGone,
			"waitevent": cmdWaitEvent,
			"exitcode":  cmdExitCode,
			"pidgone":   cmdPidGone,
			"maxlines":  cmdMaxLines,
			"wtpath":    cmdWtPath,
		},
	}
}

// mkrepo DIR: a git repo on branch main with a first commit of a few files.
func cmdMkrepo(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: mkrepo DIR")
	}
	dir := ts.MkAbs(args[0])
	ts.Check(os.MkdirAll(dir, 0o755))
	files := map[string]string{
		"README.md":     "# test repo\n",
		"edit.txt":      "line one\nline two\n",
		"delete-me.txt": "this file will be deleted\n",
		"rename-me.txt": strings.Repeat("a file that will be renamed, with enough text to be detected\n", 5),
		"script.sh":     "#!/bin/sh\necho script\n",
		".gitignore":    "*.log\n",
	}
	for name, body := range files {
		ts.Check(os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
	for _, argv := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "-A"},
		{"commit", "-q", "-m", "first"},
	} {
		git(ts, dir, argv...)
	}
}

func git(ts *testscript.TestScript, dir string, args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Test Author", "GIT_AUTHOR_EMAIL=author@example.com",
		"GIT_COMMITTER_NAME=Test Author", "GIT_COMMITTER_EMAIL=author@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		ts.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// capture VAR: set $VAR to the last command's stdout, trimmed.
func cmdCapture(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: capture VAR")
	}
	ts.Setenv(args[0], strings.TrimSpace(ts.ReadFile("stdout")))
}

// waitArgs checks a wait command's arity and returns its optional SECONDS
// argument (at index n, default 30) as a CI-scaled limit.
func waitArgs(ts *testscript.TestScript, neg bool, args []string, n int, usage string) time.Duration {
	if neg || len(args) < n || len(args) > n+1 {
		ts.Fatalf("usage: %s", usage)
	}
	limit := 30 * time.Second
	if len(args) > n {
		secs, err := strconv.Atoi(args[n])
		ts.Check(err)
		limit = time.Duration(secs) * time.Second
	}
	return slow(limit)
}

// pollUntil polls cond every 20ms until it holds, or fails the script
// with failure() after limit.
func pollUntil(ts *testscript.TestScript, limit time.Duration, cond func() bool, failure func() string) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.Fatalf("%s after %s", failure(), limit)
}

// scriptStore opens the script's grove store; closed when the script ends.
func scriptStore(ts *testscript.TestScript) *store.Store {
	st, err := store.Open(context.Background(), ts.Getenv("GROVE_HOME"), store.Options{})
	ts.Check(err)
	ts.Defer(func() { st.Close() })
	return st
}

// waitstate ID STATE [SECONDS]: poll the database until task ID is in STATE.
func cmdWaitState(ts *testscript.TestScript, neg bool, args []string) {
	limit := waitArgs(ts, neg, args, 2, "waitstate ID STATE [SECONDS]")
	st := scriptStore(ts)
	var task grove.Task
	pollUntil(ts, limit, func() bool {
		var err error
		task, err = st.Task(context.Background(), args[0])
		ts.Check(err)
		return string(task.State) == args[1]
	}, func() string {
		return fmt.Sprintf("task %s is %s (%s), not %s", args[0], task.State, task.Error, args[1])
	})
}

// waitevent ID KIND [SECONDS]: poll until task ID has an event of KIND.
func cmdWaitEvent(ts *testscript.TestScript, neg bool, args []string) {
	limit := waitArgs(ts, neg, args, 2, "waitevent ID KIND [SECONDS]")
	st := scriptStore(ts)
	pollUntil(ts, limit, func() bool {
		evs, err := st.Events(context.Background(), args[0], 0)
		ts.Check(err)
		for _, e := range evs {
			if e.Kind == args[1] {
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("task %s has no %s event", args[0], args[1]) })
}

// waitfile FILE [SECONDS]: wait until FILE exists.
func cmdWaitFile(ts *testscript.TestScript, neg bool, args []string) {
	limit := waitArgs(ts, neg, args, 1, "waitfile FILE [SECONDS]")
	path := ts.MkAbs(args[0])
	pollUntil(ts, limit, func() bool { _, err := os.Stat(path); return err == nil },
		func() string { return args[0] + " did not appear" })
}

// waitgone PATH [SECONDS]: wait until PATH no longer exists.
func cmdWaitGone(ts *testscript.TestScript, neg bool, args []string) {
	limit := waitArgs(ts, neg, args, 1, "waitgone PATH [SECONDS]")
	path := ts.MkAbs(args[0])
	pollUntil(ts, limit, func() bool { _, err := os.Lstat(path); return errors.Is(err, os.ErrNotExist) },
		func() string { return args[0] + " still exists" })
}

// exitcode N PROG ARGS...: run PROG and require exit code N.
func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("run %s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited %d, want %d", args[1], got, want)
	}
}

// pidgone FILE SECONDS: the process (and its group) whose pid is in FILE is
// gone within SECONDS.
func cmdPidGone(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: pidgone FILE SECONDS")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(ts.ReadFile(args[0])))
	ts.Check(err)
	n, err := strconv.Atoi(args[1])
	ts.Check(err)
	deadline := time.Now().Add(slow(time.Duration(n) * time.Second))
	for time.Now().Before(deadline) {
		if !alive(pid) && syscall.Kill(-pid, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.Fatalf("pid %d still alive after %ds", pid, n)
}

// maxlines FILE N: the running maximum of +1/-1 lines in FILE is at most N,
// and at least 1.
func cmdMaxLines(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: maxlines FILE N")
	}
	limit, err := strconv.Atoi(args[1])
	ts.Check(err)
	cur, peak := 0, 0
	for _, l := range strings.Fields(ts.ReadFile(args[0])) {
		switch l {
		case "+":
			cur++
		case "-":
			cur--
		}
		peak = max(peak, cur)
	}
	if peak > limit || peak < 1 {
		ts.Fatalf("peak concurrency %d, want 1..%d", peak, limit)
	}
	ts.Logf("peak concurrency %d", peak)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// killStrays kills every process whose cwd or command line mentions dir
// and returns their pids (those alive at the time).
func killStrays(dir string) []int {
	var found []int
	for range 50 {
		pids := processesMentioning(dir)
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			if !contains(found, p) {
				found = append(found, p)
			}
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return found
}

func processesMentioning(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() || !alive(pid) {
			continue
		}
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.HasPrefix(cwd, dir) || strings.Contains(string(cmdline), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// wtpath ID VAR: set $VAR to the path of task ID's (newest) workspace.
func cmdWtPath(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: wtpath ID VAR")
	}
	ctx := context.Background()
	st, err := store.Open(ctx, ts.Getenv("GROVE_HOME"), store.Options{})
	ts.Check(err)
	defer st.Close()
	ws, err := st.TaskWorkspace(ctx, args[0])
	ts.Check(err)
	ts.Setenv(args[1], ws.Path)
}
