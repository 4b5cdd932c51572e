package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// poolEntries returns the ready warm worktrees of the harness's repo.
func (h *harness) poolEntries() []grove.Workspace {
	h.t.Helper()
	all, err := h.store().PoolEntries(context.Background(), 1)
	if err != nil {
		h.t.Fatal(err)
	}
	var ready []grove.Workspace
	for _, w := range all {
		if w.State == grove.WorkspacePool {
			ready = append(ready, w)
		}
	}
	return ready
}

func (h *harness) tip() string { return strings.TrimSpace(h.git("rev-parse", "main")) }

// The warm pool: a task takes a ready worktree, the pool refills, a moved
// tip moves clean entries forward in place, a dirty entry is not reused.
func TestWarmPool(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--warm", "2")
	defer func() {
		if t.Failed() {
			h.dumpState()
		}
	}()
	ctx := context.Background()

	first := h.mustGrove("submit", "--repo", h.repo, "--", "true")
	h.mustGrove("wait", first)
	var pool []grove.Workspace
	h.until(30*time.Second, "pool of 2", func() bool { pool = h.poolEntries(); return len(pool) == 2 })
	is.True(len(pool) <= 2)
	taken := map[string]bool{pool[0].Path: true, pool[1].Path: true}

	// A task at the tip takes a ready worktree; the pool refills to 2.
	id := h.mustGrove("submit", "--repo", h.repo, "--apply", "auto", "--", "sh", "-c", "echo warm > warm.txt")
	h.mustGrove("wait", id)
	ws, err := h.store().TaskWorkspace(ctx, id)
	is.NoErr(err)
	is.True(taken[ws.Path]) // it is one of the pool's worktrees
	h.until(30*time.Second, "task applied and closed", func() bool { return h.closed(id) })

	// The apply moved the tip: the clean entries move forward in place.
	tip := h.tip()
	h.until(30*time.Second, "pool at the new tip", func() bool {
		pool = h.poolEntries()
		return len(pool) == 2 && pool[0].BaseCommit == tip && pool[1].BaseCommit == tip
	})
	// doctor --json counts it per repository and commit.
	out, _, _ := h.grove("doctor", "--json") // exit 1 is fine: other checks may complain
	var doc struct {
		Pool []store.PoolSummary `json:"pool"`
	}
	is.NoErr(json.Unmarshal([]byte(out), &doc))
	is.Equal(len(doc.Pool), 1)
	is.Equal(doc.Pool[0].Ready, 2)
	is.Equal(doc.Pool[0].ReadyAt[tip], 2)
	kept := 0
	for _, w := range pool {
		if taken[w.Path] {
			kept++ // moved forward, not re-created
		}
		b, err := os.ReadFile(filepath.Join(w.Path, "warm.txt"))
		is.NoErr(err)
		is.Equal(string(b), "warm\n")
		clean, err := h.deps().Repo(ctx, h.repo)
		is.NoErr(err)
		ok, err := clean.Clean(ctx, w.Path)
		is.NoErr(err)
		is.True(ok)
	}
	is.Equal(kept, 1) // the untaken original entry; the other one is the refill

	// A dirty entry is not reused: after the next tip move it is stale and
	// keeps its file; tasks only ever get clean entries.
	dirty := pool[0].Path
	is.NoErr(os.WriteFile(filepath.Join(dirty, "scratch.txt"), []byte("someone's work\n"), 0o644))
	id2 := h.mustGrove("submit", "--repo", h.repo, "--apply", "auto", "--", "sh", "-c", "echo two > two.txt")
	h.mustGrove("wait", id2)
	h.until(30*time.Second, "task 2 closed", func() bool { return h.closed(id2) })
	tip = h.tip()
	h.until(30*time.Second, "pool refilled at the new tip", func() bool {
		p := h.poolEntries()
		return len(p) == 2 && p[0].BaseCommit == tip && p[1].BaseCommit == tip
	})
	for _, w := range h.poolEntries() {
		is.True(w.Path != dirty)
	}
	ws2, err := h.store().TaskWorkspace(ctx, id2)
	is.NoErr(err)
	is.True(ws2.Path != dirty)
	b, err := os.ReadFile(filepath.Join(dirty, "scratch.txt"))
	is.NoErr(err)
	is.Equal(string(b), "someone's work\n")
	h.stopDaemon(syscall.SIGTERM)
}

// Entries the pool verified clean are taken without another status while
// nothing in them changes; any change to one (an edited tracked file, a
// chmod) makes it untrusted, the claim's status finds it dirty, and the
// task gets a worktree of its own. Nothing in the dirty entries is lost.
func TestWarmPoolChangedEntriesNotClaimed(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--warm", "2")
	ctx := context.Background()
	first := h.mustGrove("submit", "--repo", h.repo, "--", "true")
	h.mustGrove("wait", first)
	var pool []grove.Workspace
	h.until(30*time.Second, "pool of 2", func() bool { pool = h.poolEntries(); return len(pool) == 2 })
	tracked := strings.Fields(h.git("ls-files"))[0]
	edited := filepath.Join(pool[0].Path, tracked)
	is.NoErr(os.WriteFile(edited, []byte("edited in the pool\n"), 0o644))
	is.NoErr(os.Chmod(filepath.Join(pool[1].Path, tracked), 0o755))

	id := h.mustGrove("submit", "--repo", h.repo, "--", "true")
	h.mustGrove("wait", id)
	ws, err := h.store().TaskWorkspace(ctx, id)
	is.NoErr(err)
	is.True(ws.Path != pool[0].Path && ws.Path != pool[1].Path) // a worktree of its own
	for _, p := range pool {
		var state string
		is.NoErr(h.store().DB().QueryRow(`SELECT state FROM workspace WHERE path = ?`, p.Path).Scan(&state))
		is.Equal(state, grove.WorkspaceStale)
	}
	b, err := os.ReadFile(edited)
	is.NoErr(err)
	is.Equal(string(b), "edited in the pool\n")
	h.until(30*time.Second, "pool refilled", func() bool { return len(h.poolEntries()) == 2 })
	for _, w := range h.poolEntries() {
		is.True(w.Path != pool[0].Path && w.Path != pool[1].Path)
	}
	h.stopDaemon(syscall.SIGTERM)
}

// Restarted with a smaller --warm (or none), the daemon shrinks the pool
// through the gate: clean surplus entries are removed, never more than N
// stay ready.
func TestWarmPoolShrinks(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--warm", "3")
	h.mustGrove("wait", h.mustGrove("submit", "--repo", h.repo, "--", "true"))
	var pool []grove.Workspace
	h.until(30*time.Second, "pool of 3", func() bool { pool = h.poolEntries(); return len(pool) == 3 })
	h.stopDaemon(syscall.SIGTERM)

	h.startDaemon("--warm", "1")
	h.until(30*time.Second, "pool of 1", func() bool { return len(h.poolEntries()) == 1 })
	h.stopDaemon(syscall.SIGTERM)
	h.startDaemon()
	h.until(30*time.Second, "no pool", func() bool { return len(h.poolEntries()) == 0 })
	h.stopDaemon(syscall.SIGTERM)
	for _, w := range pool {
		_, err := os.Stat(w.Path)
		is.True(os.IsNotExist(err)) // removed, not left behind
	}
	is.Equal(strings.TrimSpace(h.git("branch", "--list", "grove/pool/*")), "")
}

// git's own state of an entry lives outside the watched tree: a change
// staged only in a verified entry's index (no file touched, so no inotify
// event) is seen too, and the entry is not reused.
func TestWarmPoolGitStateChangeNotClaimed(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	is.NoErr(os.WriteFile(filepath.Join(h.repo, "second.txt"), []byte("2\n"), 0o644))
	h.git("add", "second.txt")
	h.git("commit", "-qm", "second")
	h.startDaemon("--warm", "1")
	h.mustGrove("wait", h.mustGrove("submit", "--repo", h.repo, "--", "true"))
	var pool []grove.Workspace
	h.until(30*time.Second, "pool of 1", func() bool { pool = h.poolEntries(); return len(pool) == 1 })
	blob := strings.TrimSpace(h.git("rev-parse", "HEAD:second.txt"))
	h.git("-C", pool[0].Path, "update-index", "--add", "--cacheinfo", "100644,"+blob+",ghost.txt")

	id := h.mustGrove("submit", "--repo", h.repo, "--", "true")
	h.mustGrove("wait", id)
	ws, err := h.store().TaskWorkspace(context.Background(), id)
	is.NoErr(err)
	is.True(ws.Path != pool[0].Path)
	var state string
	is.NoErr(h.store().DB().QueryRow(`SELECT state FROM workspace WHERE path = ?`, pool[0].Path).Scan(&state))
	is.Equal(state, grove.WorkspaceStale)
	h.stopDaemon(syscall.SIGTERM)
}

// standbyPids lists the standby supervisors (`grove supervise --standby`)
// whose parent is the process ppid.
func standbyPids(ppid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !alive(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if string(cmdline) != "grove\x00supervise\x00--standby\x00" {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == strconv.Itoa(ppid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// TestWarmStartHandsTheRunToAStandby: with a warm pool the daemon keeps
// --warm supervisors started ahead (here --standbys 0 would keep none); a
// warm task's agent runs under one (the run row names it), another takes
// its place, and none outlives the daemon.
func TestWarmStartHandsTheRunToAStandby(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	d := h.startDaemon("--warm", "1", "--standbys", "0")
	defer func() {
		if t.Failed() {
			h.dumpState()
		}
	}()
	h.mustGrove("wait", h.mustGrove("submit", "--repo", h.repo, "--", "true")) // the pool learns of the repo
	var ready []int
	h.until(30*time.Second, "a standby supervisor and a pool entry", func() bool {
		ready = standbyPids(d.Process.Pid)
		return len(ready) == 1 && len(h.poolEntries()) == 1
	})
	id := h.mustGrove("submit", "--repo", h.repo, "--", "sh", "-c", "echo standby > out.txt")
	h.mustGrove("wait", id)
	run, err := h.store().AgentRun(context.Background(), id, 1)
	is.NoErr(err)
	is.Equal(run.Pid, ready[0]) // the agent ran under the standby
	is.True(h.diffHas(id, "+standby"))
	var next []int
	h.until(30*time.Second, "another standby", func() bool {
		next = standbyPids(d.Process.Pid)
		return len(next) == 1 && next[0] != ready[0]
	})
	h.stopDaemon(syscall.SIGTERM)
	h.until(10*time.Second, "the standby gone with its daemon", func() bool { return !alive(next[0]) })
}

// TestStandbysByDefault: without a pool the daemon still keeps two
// supervisors started ahead, a task's agent runs under one of them, a
// replacement follows, and all leave with their daemon; --standbys 0 keeps
// none (a run starts its own), and --standbys above 4 or below 0 is a
// usage error.
func TestStandbysByDefault(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	d := h.startDaemon()
	defer func() {
		if t.Failed() {
			h.dumpState()
		}
	}()
	var ready []int
	h.until(30*time.Second, "two standby supervisors", func() bool {
		ready = standbyPids(d.Process.Pid)
		return len(ready) == 2
	})
	id := h.mustGrove("submit", "--repo", h.repo, "--", "true")
	h.mustGrove("wait", id)
	run, err := h.store().AgentRun(context.Background(), id, 1)
	is.NoErr(err)
	is.True(slices.Contains(ready, run.Pid)) // the agent ran under a standby
	var now []int
	h.until(30*time.Second, "a replacement standby", func() bool {
		now = standbyPids(d.Process.Pid)
		return len(now) == 2 && !slices.Contains(now, run.Pid)
	})
	h.stopDaemon(syscall.SIGTERM)
	h.until(10*time.Second, "the standbys gone with their daemon", func() bool {
		return !slices.ContainsFunc(append(ready, now...), alive)
	})

	d = h.startDaemon("--standbys", "0")
	id = h.mustGrove("submit", "--repo", h.repo, "--", "true")
	h.mustGrove("wait", id)
	run, err = h.store().AgentRun(context.Background(), id, 1)
	is.NoErr(err)
	is.True(run.Pid > 0)                         // it ran, under a supervisor of its own
	is.Equal(len(standbyPids(d.Process.Pid)), 0) // and none is kept
	h.stopDaemon(syscall.SIGTERM)

	for _, bad := range []string{"5", "-1"} {
		_, stderr, err := h.grove("serve", "--standbys", bad)
		var exit *exec.ExitError
		is.True(errors.As(err, &exit))
		is.Equal(exit.ExitCode(), 2) // usage
		is.True(strings.Contains(stderr, "--standbys"))
	}
}

// With a daemon up, grove submit hands its request to it (the daemon logs
// each one): a relative --repo, --json and --wait work as without it, an
// error keeps its exit code and hint, and another git environment, or no
// daemon, submits locally.
func TestSubmitGoesThroughTheDaemon(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("-v") // the debug line of a wait answered
	defer func() {
		if t.Failed() {
			h.dumpState()
		}
	}()
	h.until(10*time.Second, "the daemon's submit socket", func() bool {
		_, err := os.Stat(filepath.Join(h.home, "submit.sock"))
		return err == nil
	})
	loggedThat := func(what, id string) bool {
		b, _ := os.ReadFile(filepath.Join(h.work, "daemon.log"))
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, what) && strings.Contains(line, id) {
				return true
			}
		}
		return false
	}
	logged := func(id string) bool { return loggedThat("task submitted through the daemon", id) }
	id := h.mustGrove("submit", "--repo", "repo", "--", "sh", "-c", "sleep 1; echo via > out.txt") // relative to the CLI's directory
	is.True(logged(id))
	is.Equal(h.task(id).RepoPath, h.repo)
	h.mustGrove("wait", id)
	is.True(loggedThat("wait answered through the daemon", id)) // grove wait asked the daemon
	is.True(h.diffHas(id, "+via"))

	out := h.mustGrove("submit", "--repo", h.repo, "--json", "--", "true")
	var task struct{ ID, State string }
	is.NoErr(json.Unmarshal([]byte(out), &task))
	is.True(logged(task.ID))
	is.True(task.State != "")

	_, errOut, err := h.grove("submit", "--repo", h.repo, "--base", "no-such-base", "--", "true")
	var exit *exec.ExitError
	is.True(errors.As(err, &exit))
	is.Equal(exit.ExitCode(), 1)
	is.True(strings.Contains(errOut, "unknown base"))
	is.True(strings.Contains(errOut, "hint:"))

	cmd := exec.Command("grove", "submit", "--repo", h.repo, "--", "true")
	cmd.Dir, cmd.Env = h.work, append(h.env, "GIT_CEILING_DIRECTORIES=/nowhere")
	b, err := cmd.Output()
	is.NoErr(err)
	local := strings.TrimSpace(string(b))
	is.True(!logged(local))    // another git environment: recorded by the CLI
	h.mustGrove("wait", local) // and the daemon works it

	h.stopDaemon(syscall.SIGTERM)
	id = h.mustGrove("submit", "--repo", h.repo, "--", "true")
	is.True(!logged(id))
	is.Equal(h.task(id).State, grove.StateQueued) // recorded without a daemon
}
