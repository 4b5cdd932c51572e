package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// harness drives real grove processes (the test binary, installed as
// `grove` on PATH by testscript.Main) against a real repo and home.
type harness struct {
	t      *testing.T
	work   string
	home   string
	repo   string
	env    []string
	daemon *exec.Cmd
	st     *store.Store

	database string // GROVE_DATABASE of the processes (newPGHarness); "" SQLite
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	work := t.TempDir()
	h := &harness{t: t, work: work, home: filepath.Join(work, "home"), repo: filepath.Join(work, "repo")}
	h.env = append(os.Environ(), "GROVE_HOME="+h.home, "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Test Author", "GIT_AUTHOR_EMAIL=author@example.com",
		"GIT_COMMITTER_NAME=Test Author", "GIT_COMMITTER_EMAIL=author@example.com",
		"GORACE=atexit_sleep_ms=0", // a -race binary pauses 1 s at every exit otherwise
		"GROVE_ALLOW_WRITE="+work)  // agents write marks in work; sandbox tests clear it
	if err := os.MkdirAll(h.repo, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.repo, "README.md"), []byte("# repo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.git("init", "-q", "-b", "main")
	h.git("add", "-A")
	h.git("commit", "-q", "-m", "first")
	t.Cleanup(func() {
		if h.daemon != nil && h.daemon.ProcessState == nil {
			_ = h.daemon.Process.Signal(syscall.SIGKILL)
			_ = h.daemon.Wait()
		}
		if h.st != nil {
			h.st.Close()
		}
		if pids := killStrays(work); len(pids) > 0 {
			t.Errorf("stray processes left behind and killed: %v", pids)
		}
	})
	return h
}

func (h *harness) git(args ...string) string {
	h.t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env = h.repo, h.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		h.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// grove runs the CLI and returns stdout, stderr and its error.
func (h *harness) grove(args ...string) (string, string, error) {
	cmd := exec.Command("grove", args...)
	cmd.Dir, cmd.Env = h.work, h.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// mustGrove runs the CLI and fails the test on an error.
func (h *harness) mustGrove(args ...string) string {
	h.t.Helper()
	out, errOut, err := h.grove(args...)
	if err != nil {
		h.t.Fatalf("grove %v: %v\n%s", args, err, errOut)
	}
	return strings.TrimSpace(out)
}

// startDaemon starts `grove serve` and returns once it holds the home lock.
func (h *harness) startDaemon(args ...string) *exec.Cmd {
	h.t.Helper()
	logf, err := os.OpenFile(filepath.Join(h.work, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("grove", append([]string{"serve"}, args...)...)
	cmd.Dir, cmd.Env = h.work, h.env
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.daemon = cmd
	h.until(10*time.Second, "daemon holds its lock", func() bool {
		pid, up := daemonPid(h.home)
		return up && pid == cmd.Process.Pid
	})
	return cmd
}

// stopDaemon signals the daemon and returns how long it took to exit.
func (h *harness) stopDaemon(sig syscall.Signal) time.Duration {
	h.t.Helper()
	start := time.Now()
	_ = h.daemon.Process.Signal(sig)
	_ = h.daemon.Wait()
	return time.Since(start)
}

func (h *harness) store() *store.Store {
	if h.st == nil {
		st, err := store.Open(context.Background(), h.home, store.Options{Database: h.database})
		if err != nil {
			h.t.Fatal(err)
		}
		h.st = st
	}
	return h.st
}

func (h *harness) task(id string) grove.Task {
	h.t.Helper()
	t, err := h.store().Task(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return t
}

// closed reports whether task id's worktree is removed (the task keeps
// its outcome, applied or discarded, or becomes closed).
func (h *harness) closed(id string) bool {
	h.t.Helper()
	ws, err := h.store().TaskWorkspace(context.Background(), id)
	if errors.Is(err, grove.ErrNotFound) {
		return false
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return ws.State == grove.WorkspaceRemoved && h.task(id).State.Settled()
}

// until polls cond every 20ms until it holds or the (CI-scaled) limit ends.
func (h *harness) until(limit time.Duration, what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(slow(limit))
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.dumpState()
	h.t.Fatalf("timed out after %s waiting for %s", slow(limit), what)
}

// dumpState logs what a failing test needs to be understood: the tail of
// the daemon's log and how many tasks are in each state.
func (h *harness) dumpState() {
	if b, err := os.ReadFile(filepath.Join(h.work, "daemon.log")); err == nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		h.t.Logf("daemon.log (last 40 lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
	if h.home != "" {
		if _, err := os.Stat(filepath.Join(h.home, "grove.db")); err == nil {
			if counts, err := h.store().CountTasks(context.Background()); err == nil {
				h.t.Logf("tasks by state: %v", counts)
			}
			if tasks, err := h.store().ListTasks(context.Background(), store.TaskFilter{}); err == nil {
				for _, t := range tasks {
					if !h.closed(t.ID) {
						evs, _ := h.store().Events(context.Background(), t.ID, 0)
						var kinds []string
						for _, e := range evs {
							kinds = append(kinds, e.Kind+":"+e.Message)
						}
						h.t.Logf("task %s %s %q events %v", t.ID, t.State, t.Error, kinds)
					}
				}
			}
		}
	}
}

func (h *harness) writeAgent(name, body string) string {
	h.t.Helper()
	p := filepath.Join(h.work, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// diffHas reports whether task id's patch contains s.
func (h *harness) diffHas(id, s string) bool {
	h.t.Helper()
	return strings.Contains(h.mustGrove("diff", id), s)
}
