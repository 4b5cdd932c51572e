package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// setupRepo commits a .grove.toml (setup: ~2 s, then a marker into an
// ignored directory and a line naming the worktree into count; copy: .env
// files; setup input: package-lock.json) and puts ignored .env files in
// the main checkout. It returns the count file.
func (h *harness) setupRepo(extra string) string {
	h.t.Helper()
	count := filepath.Join(h.work, "setup-count")
	files := map[string]string{
		".gitignore":        "deps/\n.env\n.env.*\n",
		"package-lock.json": "{\"v\": 1}\n",
		".grove.toml": `# grove settings
setup = ["sleep 2", "mkdir -p deps && echo built > deps/marker && echo \"$PWD\" >> ` + count + `"]
copy = [".env", ".env.*"]
setup_inputs = ["package-lock.json"]
` + extra,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(h.repo, name), []byte(body), 0o644); err != nil {
			h.t.Fatal(err)
		}
	}
	h.git("add", "-A")
	h.git("commit", "-qm", "settings")
	// A submodule whose URL is unreachable: only the main repository's
	// module store holds its commits (the upstream is deleted below).
	sub := filepath.Join(h.work, "sub-upstream")
	h.git("init", "-q", "-b", "main", sub)
	if err := os.WriteFile(filepath.Join(sub, "s.txt"), []byte("from the submodule\n"), 0o644); err != nil {
		h.t.Fatal(err)
	}
	h.git("-C", sub, "add", "s.txt")
	h.git("-C", sub, "commit", "-qm", "sub")
	h.git("-c", "protocol.file.allow=always", "submodule", "add", "-q", sub, "libs/sub")
	h.git("config", "-f", ".gitmodules", "submodule.libs/sub.url", "https://grove.invalid/sub.git")
	h.git("add", "-A")
	h.git("commit", "-qm", "submodule")
	if err := os.RemoveAll(sub); err != nil {
		h.t.Fatal(err)
	}
	for name, body := range map[string]string{".env": "SECRET=1\n", ".env.local": "LOCAL=1\n"} {
		if err := os.WriteFile(filepath.Join(h.repo, name), []byte(body), 0o600); err != nil {
			h.t.Fatal(err)
		}
	}
	return count
}

// setupCounts counts the setups that completed per worktree.
func setupCounts(t *testing.T, count string) map[string]int {
	b, err := os.ReadFile(count)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, l := range strings.Fields(string(b)) {
		n[l]++
	}
	return n
}

// A task's worktree is set up before its agent starts: the ignored .env
// files are copied (copies, not links), the setup commands run (the marker
// is there), the task stays preparing meanwhile, and its setup has its own
// log. A failing setup fails the task with setup_failed and the log's last
// lines, keeps the worktree, and retry runs setup again; the kept worktree
// closes. Settings are overridable per box (grove repo set / show).
func TestSetupStage(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	count := h.setupRepo("")
	h.startDaemon()
	defer func() {
		if t.Failed() {
			h.dumpState()
		}
	}()
	ctx := context.Background()

	// grove repo show names each value's source.
	out := h.mustGrove("repo", "show", "--repo", h.repo, "--json")
	var shown struct {
		Settings grove.Settings `json:"settings"`
	}
	is.NoErr(json.Unmarshal([]byte(out), &shown))
	is.Equal(shown.Settings.Copy, []string{".env", ".env.*"})
	is.True(strings.HasPrefix(shown.Settings.Sources["setup"], ".grove.toml at "))
	is.Equal(shown.Settings.Sources["keep_ignored"], "default")

	agent := `test -f deps/marker && cat .env .env.local libs/sub/s.txt && echo agent-ran`
	id := h.mustGrove("submit", "--repo", h.repo, "--", "sh", "-c", agent)
	h.waitEvent(30*time.Second, id, "setup_started")
	is.Equal(h.task(id).State, grove.StatePreparing) // the task waits for its setup
	h.mustGrove("wait", id)
	is.Equal(h.task(id).State, grove.StateReview)
	log := h.mustGrove("logs", id)
	is.True(strings.Contains(log, "SECRET=1") && strings.Contains(log, "LOCAL=1") && strings.Contains(log, "agent-ran"))
	is.True(strings.Contains(log, "from the submodule")) // checked out without network
	wt := h.worktreeOf(id)
	is.Equal(setupCounts(t, count)[wt], 1)
	var src, dst syscall.Stat_t
	is.NoErr(syscall.Stat(filepath.Join(h.repo, ".env"), &src))
	is.NoErr(syscall.Stat(filepath.Join(wt, ".env"), &dst))
	is.True(src.Ino != dst.Ino) // a copy, never a hard link
	setupLog := h.mustGrove("logs", "--setup", id)
	is.True(strings.Contains(setupLog, "$ sleep 2"))
	is.True(strings.Contains(setupLog, "copied 2 files"))
	evs, err := h.store().Events(ctx, id, 0)
	is.NoErr(err)
	is.True(hasEvent(evs, "setup_done"))

	// The gate keeps what setup built unless keep_ignored says it is
	// reproducible; the copies, unchanged, are never at risk.
	_, errOut, err := h.grove("close", id)
	is.True(err != nil)
	t.Logf("close refused: %s", errOut)
	is.True(strings.Contains(errOut, "ignored (deps/)")) // not .env: an unchanged copy
	h.mustGrove("repo", "set", "--repo", h.repo, "keep_ignored", "deps")
	h.mustGrove("close", id)
	_, err = os.Stat(wt)
	is.True(os.IsNotExist(err))

	// A per-box override: a setup that fails until a file exists.
	allow := filepath.Join(h.work, "allow")
	h.mustGrove("repo", "set", "--repo", h.repo, "setup", "echo boom-output; test -f "+allow+" || exit 3", "mkdir -p deps && echo ok > deps/marker")
	out = h.mustGrove("repo", "show", "--repo", h.repo)
	is.True(strings.Contains(out, "git config grove.setup (local)"))
	failing := h.mustGrove("submit", "--repo", h.repo, "--", "sh", "-c", "test -f deps/marker")
	_, _, err = h.grove("wait", failing)
	is.True(err != nil)
	task := h.task(failing)
	is.Equal(task.State, grove.StateFailed)
	is.True(strings.HasPrefix(task.Error, "setup_failed: "))
	is.True(strings.Contains(task.Error, "boom-output")) // the log's last lines
	is.True(strings.Contains(task.Error, "exited with code 3"))
	kept := h.worktreeOf(failing)
	_, err = os.Stat(filepath.Join(kept, ".env")) // kept for inspection
	is.NoErr(err)

	// retry runs setup again, in the same worktree.
	is.NoErr(os.WriteFile(allow, nil, 0o644))
	h.mustGrove("retry", failing)
	h.mustGrove("wait", failing)
	is.Equal(h.task(failing).State, grove.StateReview)
	is.Equal(h.worktreeOf(failing), kept)

	// A failed setup's worktree is closable.
	is.NoErr(os.Remove(allow))
	second := h.mustGrove("submit", "--repo", h.repo, "--", "true")
	_, _, err = h.grove("wait", second)
	is.True(err != nil)
	is.True(strings.HasPrefix(h.task(second).Error, "setup_failed: "))
	wt2 := h.worktreeOf(second)
	h.mustGrove("close", second)
	_, err = os.Stat(wt2)
	is.True(os.IsNotExist(err))

	// A submodule commit the main repository does not have: a clear
	// error naming the submodule, no network tried.
	h.git("update-index", "--cacheinfo", "160000,"+strings.Repeat("ab", 20)+",libs/sub")
	h.git("commit", "-qm", "unknown submodule commit")
	missing := h.mustGrove("submit", "--repo", h.repo, "--", "true")
	_, _, err = h.grove("wait", missing)
	is.True(err != nil)
	t.Logf("missing submodule commit: %s", h.task(missing).Error)
	is.True(strings.Contains(h.task(missing).Error, "submodule libs/sub (libs/sub): commit abababababab is not in"))

	// Unset: .grove.toml applies again.
	h.mustGrove("repo", "unset", "--repo", h.repo, "setup")
	out = h.mustGrove("repo", "show", "--repo", h.repo)
	is.True(!strings.Contains(out, "git config grove.setup"))

	// A base on a remote-tracking ref: the task's branch tracks nothing.
	h.git("update-ref", "refs/remotes/origin/main", "HEAD~1") // before the unknown submodule commit
	remote := h.mustGrove("submit", "--repo", h.repo, "--base", "origin/main", "--", "true")
	h.mustGrove("wait", remote)
	is.Equal(h.task(remote).State, grove.StateReview)
	cfg := h.git("config", "--list", "--local")
	is.True(!strings.Contains(cfg, "branch.grove/"+remote)) // no upstream, no merge config
	h.stopDaemon(syscall.SIGTERM)
}

// With a pool, entries are set up when they are filled; a claim of an
// entry set up under the same settings and inputs skips setup, so the
// agent starts without waiting for it. A commit that changes a setup input
// (the lockfile) on the tip re-runs setup for the pool's entries only,
// never in a task's worktree.
func TestWarmPoolSetup(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	count := h.setupRepo(`keep_ignored = ["deps"]` + "\n")
	h.startDaemon("--warm", "2")
	defer func() {
		if t.Failed() {
			h.dumpState()
		}
	}()
	ctx := context.Background()
	setUp := func() []grove.Workspace {
		var out []grove.Workspace
		for _, w := range h.poolEntries() {
			if w.SetupKey != "" {
				out = append(out, w)
			}
		}
		return out
	}
	// The first task registers the repository (and is set up itself).
	h.mustGrove("wait", h.mustGrove("submit", "--repo", h.repo, "--", "true"))
	h.until(60*time.Second, "2 pool entries set up", func() bool { return len(setUp()) == 2 })
	pool := setUp()
	out, _, _ := h.grove("doctor", "--json") // exit 1 is fine: other checks may complain
	var doc struct {
		Pool []store.PoolSummary `json:"pool"`
	}
	is.NoErr(json.Unmarshal([]byte(out), &doc))
	is.Equal(doc.Pool[0].SetUp, 2)
	is.True(strings.Contains(h.mustGrove("ls"), "2 set up, 0 not"))
	for _, w := range pool {
		is.Equal(setupCounts(t, count)[w.Path], 1)
	}

	// The claim skips setup: no setup stage, the marker is there.
	id := h.mustGrove("submit", "--repo", h.repo, "--", "sh", "-c", "test -f deps/marker && cat .env")
	h.mustGrove("wait", id)
	is.Equal(h.task(id).State, grove.StateReview)
	wt := h.worktreeOf(id)
	is.True(wt == pool[0].Path || wt == pool[1].Path)
	evs, err := h.store().Events(ctx, id, 0)
	is.NoErr(err)
	is.True(!hasEvent(evs, "setup_started"))
	is.Equal(setupCounts(t, count)[wt], 1)

	// A lockfile change lands on the tip: pool entries are set up again,
	// the task's worktree is not.
	h.until(60*time.Second, "pool refilled and set up", func() bool { return len(setUp()) == 2 })
	changer := h.mustGrove("submit", "--repo", h.repo, "--apply", "auto", "--", "sh", "-c", `echo '{"v": 2}' > package-lock.json`)
	h.mustGrove("wait", changer)
	h.until(30*time.Second, "lockfile change applied", func() bool { return h.closed(changer) })
	tip := h.tip()
	h.until(60*time.Second, "pool set up again at the new tip", func() bool {
		p := setUp()
		if len(p) != 2 {
			return false
		}
		for _, w := range p {
			if w.BaseCommit != tip || setupCounts(t, count)[w.Path] < 1 {
				return false
			}
		}
		return true
	})
	counts := setupCounts(t, count)
	is.Equal(counts[wt], 1) // the task's worktree: never set up again
	moved := 0
	for _, w := range setUp() {
		if counts[w.Path] == 2 {
			moved++ // an entry that was set up, moved to the new tip, set up again
		}
	}
	is.True(moved >= 1)
	h.stopDaemon(syscall.SIGTERM)
}

// A session's --serve line runs with sh -c and GROVE_PORT set: the
// service is reachable on its port when `session start` returns, and
// `session ls` shows its URL. A service that cannot bind makes `session
// start` fail with the last lines of its log.
func TestSessionServeShellLine(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	// The session's worktree is set up before its service starts.
	is.NoErr(os.WriteFile(filepath.Join(h.repo, ".grove.toml"), []byte(`setup = ["echo ready > prepared"]`+"\n"), 0o644))
	is.NoErr(os.WriteFile(filepath.Join(h.repo, ".gitignore"), []byte("prepared\nport.txt\n"), 0o644))
	h.git("add", "-A")
	h.git("commit", "-qm", "settings")
	h.startDaemon()
	out := h.mustGrove("session", "start", "web", "--repo", h.repo, "--serve", `test -f prepared && echo "port=$GROVE_PORT" > port.txt && exec grove-testhttp`)
	var port int
	_, err := fmt.Sscanf(out, "web live port %d", &port)
	is.NoErr(err)
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port)) // reachable now, no wait
	is.NoErr(err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	is.NoErr(err)
	is.Equal(string(body), "ok\n")
	b, err := os.ReadFile(filepath.Join(h.sessionWT("web"), "port.txt"))
	is.NoErr(err)
	is.Equal(string(b), fmt.Sprintf("port=%d\n", port)) // $GROVE_PORT expanded by the shell
	is.True(strings.Contains(h.mustGrove("session", "ls"), fmt.Sprintf("http://127.0.0.1:%d", port)))

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err)
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	_, errOut, err := h.grove("session", "start", "clash", "--repo", h.repo, "--serve", fmt.Sprintf("GROVE_PORT=%d exec grove-testhttp", busyPort))
	is.True(err != nil)
	is.True(strings.Contains(errOut, "address already in use")) // the service's own words, from its log
	h.mustGrove("session", "stop", "web")
	h.stopDaemon(syscall.SIGTERM)
}

// A daemon killed during a task's setup (right after a command's
// supervisor started, or after the last command ended but before the
// hand-off was recorded): the next daemon re-adopts or collects the
// command instead of running it again, finishes the setup and starts the
// agent once. Each setup command and the agent ran exactly once.
func TestSetupSurvivesDaemonCrash(t *testing.T) {
	for _, fp := range []string{"setup.after-start", "setup.before-handoff"} {
		t.Run(fp, func(t *testing.T) {
			is := is.New(t)
			h := newHarness(t)
			counter := filepath.Join(h.work, "ran")
			toml := `setup = ["echo setup-one >> ` + counter + `; sleep 1", "echo setup-two >> ` + counter + `"]` + "\n"
			is.NoErr(os.WriteFile(filepath.Join(h.repo, ".grove.toml"), []byte(toml), 0o644))
			h.git("add", "-A")
			h.git("commit", "-qm", "settings")
			died := h.startCrashingDaemon(fp)
			id := h.mustGrove("submit", "--repo", h.repo, "--", "sh", "-c", "echo agent >> "+counter)
			select {
			case <-died:
			case <-time.After(slow(60 * time.Second)):
				t.Fatalf("daemon did not die at %s", fp)
			}
			is.Equal(h.task(id).State, grove.StatePreparing)
			h.startDaemon()
			h.mustGrove("wait", id)
			is.Equal(h.task(id).State, grove.StateReview)
			is.Equal(countLines(t, counter), map[string]int{"setup-one": 1, "setup-two": 1, "agent": 1})
			h.stopDaemon(syscall.SIGTERM)
		})
	}
}
