package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
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
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/store"
)

type storeTx = store.Tx

// testHTTPMain is `grove-testhttp [-exit N]`, a tiny service for session
// tests: an HTTP server on 127.0.0.1:$GROVE_PORT answering "ok" (or, with
// -exit N, a service that fails at once with code N). It prints why it
// could not listen and exits 1, as a real server would on EADDRINUSE.
func testHTTPMain() {
	if len(os.Args) == 3 && os.Args[1] == "-exit" {
		code, _ := strconv.Atoi(os.Args[2])
		fmt.Fprintf(os.Stderr, "testhttp: failing on purpose with code %d\n", code)
		os.Exit(code)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("GROVE_PORT"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "testhttp: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "testhttp: listening on %s\n", ln.Addr())
	_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }))
	os.Exit(1)
}

// startSessions starts n sessions whose service records its pid, oldest
// first, and returns their keys.
func (h *harness) startSessions(keys ...string) {
	h.t.Helper()
	svc := h.writeAgent("svc.sh", `echo $$ > "svc.log"
exec grove-testhttp
`)
	for _, k := range keys {
		out := h.mustGrove("session", "start", k, "--repo", h.repo, "--", svc)
		if !strings.HasPrefix(out, k+" live port ") {
			h.t.Fatalf("session start %s: %q", k, out)
		}
	}
}

func (h *harness) servicePid(key string) int {
	h.t.Helper()
	p := filepath.Join(h.home, "worktrees", "repo-1", "s-"+key, "svc.log")
	h.until(10*time.Second, "service of "+key+" started", func() bool { _, err := os.Stat(p); return err == nil })
	return readInt(h.t, p)
}

func (h *harness) deps() *jobs.Deps {
	d, err := jobs.NewDeps(h.store(), h.home, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

// Idle TTL with an injected clock: a session idle past the TTL is evicted
// and its service process is gone; one used within the TTL stays.
func TestEvictIdleWithInjectedClock(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--port-range", "21100-21109")
	h.startSessions("old", "fresh")
	oldPid, freshPid := h.servicePid("old"), h.servicePid("fresh")
	ctx := context.Background()
	d := h.deps()
	// "fresh" was used 10 minutes ago, "old" an hour ago, by the injected clock.
	freshS, err := h.store().Session(ctx, "fresh")
	is.NoErr(err)
	now := freshS.LastUsedAt.Add(10 * time.Minute)
	is.NoErr(h.store().InTx(ctx, func(tx *storeTx) error {
		return tx.TouchSessionAt(ctx, "old", now.Add(-time.Hour))
	}))
	evicted, err := jobs.EvictIdle(ctx, d, now, 30*time.Minute)
	is.NoErr(err)
	is.Equal(evicted, []string{"old"})
	is.True(!alive(oldPid))
	is.True(alive(freshPid))
	s, err := h.store().Session(ctx, "old")
	is.NoErr(err)
	is.Equal(s.State, grove.SessionEvicted)
	is.True(s.Port != 0) // the port stays leased for the restart
	h.mustGrove("session", "close", "--force", "old")
	h.mustGrove("session", "close", "--force", "fresh")
	h.stopDaemon(syscall.SIGTERM)
}

// LRU: with a cap of 2 and three sessions the least recently used idle one
// is evicted; with all of them busy, none is.
func TestLRUCapNeverEvictsBusy(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--max-agents", "4", "--port-range", "21110-21119")
	h.startSessions("a", "b", "c")
	ctx := context.Background()
	d := h.deps()

	// All busy: a running task in each.
	release := filepath.Join(h.work, "release")
	marks := filepath.Join(h.work, "marks")
	is.NoErr(os.MkdirAll(marks, 0o755))
	agent := h.writeAgent("agent.sh", `touch "$MARKS/$GROVE_TASK_ID"
while [ ! -e "$RELEASE" ]; do sleep 0.05; done
`)
	var ids []string
	for _, k := range []string{"a", "b", "c"} {
		ids = append(ids, h.mustGrove("submit", "--session", k, "--env", "MARKS="+marks, "--env", "RELEASE="+release, "--", agent))
	}
	h.until(30*time.Second, "3 agents running", func() bool { e, _ := os.ReadDir(marks); return len(e) == 3 })
	evicted, err := jobs.LRUCap(ctx, d, 2, "")
	is.NoErr(err)
	is.Equal(len(evicted), 0)

	is.NoErr(os.WriteFile(release, nil, 0o644))
	h.mustGrove(append([]string{"wait"}, ids...)...)
	// Order of use: a (least recent), then b, then c.
	base := time.Now()
	is.NoErr(h.store().InTx(ctx, func(tx *storeTx) error {
		for i, k := range []string{"a", "b", "c"} {
			if err := tx.TouchSessionAt(ctx, k, base.Add(time.Duration(i)*time.Minute)); err != nil {
				return err
			}
		}
		return nil
	}))
	aPid := h.servicePid("a")
	evicted, err = jobs.LRUCap(ctx, d, 2, "")
	is.NoErr(err)
	is.Equal(evicted, []string{"a"})
	is.True(!alive(aPid))
	for _, k := range []string{"a", "b", "c"} {
		for _, id := range ids {
			_, _, _ = h.grove("discard", id)
		}
		h.mustGrove("session", "close", "--force", k)
	}
	h.stopDaemon(syscall.SIGTERM)
}

// sessionWT is a session's worktree.
func (h *harness) sessionWT(key string) string {
	return filepath.Join(h.home, "worktrees", "repo-1", "s-"+key)
}

func (h *harness) session(key string) grove.Session {
	h.t.Helper()
	s, err := h.store().Session(context.Background(), key)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) sessionEvents(key string) []grove.Event {
	h.t.Helper()
	evs, err := h.store().SessionEvents(context.Background(), key)
	if err != nil {
		h.t.Fatal(err)
	}
	return evs
}

func countEvents(evs []grove.Event, kind string) int {
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// listening reports whether something accepts connections on port.
func listening(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Issue 17 problem 1: files written into a session's worktree between
// tasks (by a person) are not the next task's work: its diff holds only
// the agent's file, the start found them (session_pending), apply lands
// only the agent's change, the person's files are still in the worktree,
// and session show lists them as pending.
func TestSessionTaskDiffIsOwnWork(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--port-range", "21120-21129")
	h.mustGrove("session", "start", "b", "--repo", h.repo)
	t1 := h.mustGrove("submit", "--session", "b", "--", "sh", "-c", "echo one > f1.txt")
	h.mustGrove("wait", t1)
	h.mustGrove("apply", t1)

	wt := h.sessionWT("b")
	is.NoErr(os.WriteFile(filepath.Join(wt, "human.txt"), []byte("work\n"), 0o644))
	f, err := os.OpenFile(filepath.Join(wt, "f1.txt"), os.O_APPEND|os.O_WRONLY, 0)
	is.NoErr(err)
	_, err = f.WriteString("edit\n")
	is.NoErr(err)
	is.NoErr(f.Close())

	show := h.mustGrove("session", "show", "b")
	is.True(strings.Contains(show, "human.txt"))                            // pending before the task
	is.True(strings.Contains(h.mustGrove("session", "diff", "b"), "+edit")) // the person's edit

	t2 := h.mustGrove("submit", "--session", "b", "--", "sh", "-c", "echo agent > agent3.txt")
	h.mustGrove("wait", t2)
	stat := h.mustGrove("diff", "--stat", t2)
	is.True(strings.Contains(stat, "agent3.txt"))
	is.True(!strings.Contains(stat, "human.txt")) // not the agent's
	is.True(!strings.Contains(stat, "f1.txt"))    // not the agent's
	is.True(strings.HasSuffix(stat, "1 files changed, +1 -0"))
	evs, err := h.store().Events(context.Background(), t2, 0)
	is.NoErr(err)
	pending := ""
	for _, e := range evs {
		if e.Kind == "session_pending" {
			pending = e.Message
		}
	}
	is.True(strings.Contains(pending, "human.txt") && strings.Contains(pending, "f1.txt"))

	h.mustGrove("apply", t2)
	is.Equal(strings.TrimSpace(h.git("show", "main:agent3.txt")), "agent")
	is.Equal(strings.TrimSpace(h.git("show", "main:f1.txt")), "one") // the person's edit did not land
	if exec.Command("git", "-C", h.repo, "cat-file", "-e", "main:human.txt").Run() == nil {
		t.Fatal("human.txt landed on main")
	}
	// Still in the worktree, and still pending.
	b, err := os.ReadFile(filepath.Join(wt, "human.txt"))
	is.NoErr(err)
	is.Equal(string(b), "work\n")
	b, err = os.ReadFile(filepath.Join(wt, "f1.txt"))
	is.NoErr(err)
	is.Equal(string(b), "one\nedit\n")
	var v struct {
		Pending []grove.FileChange `json:"pending"`
	}
	is.NoErr(json.Unmarshal([]byte(h.mustGrove("session", "show", "--json", "b")), &v))
	var names []string
	for _, f := range v.Pending {
		names = append(names, f.Path)
	}
	is.True(slices.Contains(names, "human.txt") && slices.Contains(names, "f1.txt"))
	// The person's changes are never counted as applied: close refuses.
	_, errOut, err := h.grove("session", "close", "b")
	is.True(err != nil)
	is.True(strings.Contains(errOut, "unapplied_commits"))
	h.mustGrove("session", "close", "--force", "b")
	h.stopDaemon(syscall.SIGTERM)
}

// Issue 17 problem 2: a process that took the session's port while it was
// evicted makes resume fail, naming it; the session is not live. Once the
// port is free, resume brings it back on the same port.
func TestSessionPortSquatterFailsResume(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--port-range", "21130-21130")
	svc := h.writeAgent("svc.sh", "exec grove-testhttp\n")
	is.Equal(h.mustGrove("session", "start", "web", "--repo", h.repo, "--", svc), "web live port 21130")
	is.True(listening(21130))
	is.Equal(h.mustGrove("session", "stop", "web"), "web evicted port 21130")
	is.True(!listening(21130))

	squatter, err := net.Listen("tcp", "127.0.0.1:21130")
	is.NoErr(err)
	_, errOut, err := h.grove("session", "resume", "web")
	is.True(err != nil)
	is.True(strings.Contains(errOut, "port 21130 is in use by pid "+strconv.Itoa(os.Getpid()))) // names the squatter
	s := h.session("web")
	is.Equal(s.State, grove.SessionFailed)
	is.True(strings.Contains(s.Reason, "port 21130"))
	ls := h.mustGrove("session", "ls")
	is.True(!strings.Contains(ls, "live"))

	is.NoErr(squatter.Close())
	is.Equal(h.mustGrove("session", "resume", "web"), "web live port 21130")
	h.mustGrove("session", "close", "--force", "web")
	is.True(!listening(21130))
	h.stopDaemon(syscall.SIGTERM)
}

// Issue 17 problem 2: a service that daemonizes a child (setsid, cd /) is
// live once that child listens, and `session stop` kills the child too:
// the port is free afterwards.
func TestSessionStopKillsDaemonizedService(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--port-range", "21135-21139")
	svc := h.writeAgent("svc.sh", `setsid sh -c 'cd /; exec grove-testhttp' </dev/null >/dev/null 2>&1 &
echo $! > "$GROVE_WORKTREE/escaped.pid"
exec sleep 600
`)
	is.Equal(h.mustGrove("session", "start", "d", "--repo", h.repo, "--", svc), "d live port 21135")
	pid := readInt(t, filepath.Join(h.sessionWT("d"), "escaped.pid"))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	is.True(alive(pid))
	is.True(listening(21135))
	is.Equal(h.mustGrove("session", "stop", "d"), "d evicted port 21135")
	h.until(5*time.Second, "daemonized child gone", func() bool { return !alive(pid) })
	is.True(!listening(21135))
	l, err := net.Listen("tcp", "127.0.0.1:21135") // free for the next lease
	is.NoErr(err)
	l.Close()
	h.mustGrove("session", "close", "--force", "d")
	h.stopDaemon(syscall.SIGTERM)
}

// Issue 17 problem 3: with --idle-ttl 5s, a session whose service answers a
// request every 0.5 s is not evicted while an idle one is.
func TestSessionServiceInUseNotEvicted(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--port-range", "21140-21149", "--idle-ttl", "5s")
	svc := h.writeAgent("svc.sh", "exec grove-testhttp\n")
	is.Equal(h.mustGrove("session", "start", "busy", "--repo", h.repo, "--", svc), "busy live port 21140")
	// The client starts at once: "busy" is in use from now on.
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		client := &http.Client{Timeout: 2 * time.Second}
		ok := 0
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				done <- ok
				return
			case <-tick.C:
			}
			if resp, err := client.Get("http://127.0.0.1:21140/"); err == nil {
				resp.Body.Close()
				ok++
			}
		}
	}()
	is.Equal(h.mustGrove("session", "start", "idle", "--repo", h.repo, "--", svc), "idle live port 21141")
	started := time.Now()
	h.until(60*time.Second, "idle session evicted", func() bool { return h.session("idle").State == grove.SessionEvicted })
	is.True(time.Since(started) >= 4*time.Second) // not before its TTL
	// Another full TTL and more: the busy one stays live.
	for end := time.Now().Add(7 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if s := h.session("busy"); s.State != grove.SessionLive {
			h.dumpState()
			b, _ := os.ReadFile("/proc/net/tcp")
			t.Logf("tcp: %s", b)
			t.Fatalf("busy session %s: %v", s.State, h.sessionEvents("busy"))
		}
	}
	close(stop)
	is.True(<-done >= 10) // it was answering all along
	s := h.session("busy")
	is.Equal(s.Activity, "connection on port 21140")
	is.True(strings.Contains(h.mustGrove("session", "ls"), "connection on port 21140"))
	h.mustGrove("session", "close", "--force", "busy")
	h.mustGrove("session", "close", "--force", "idle")
	h.stopDaemon(syscall.SIGTERM)
}

// Issue 17 problem 4: with the range full, `session start` exits 1 at once
// with the hint, and the session is not live. A port something else
// listens on is never leased.
func TestSessionStartFullRangeFailsAtOnce(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--port-range", "21150-21151")
	squatter, err := net.Listen("tcp", "127.0.0.1:21151")
	is.NoErr(err)
	defer squatter.Close()
	svc := h.writeAgent("svc.sh", "exec grove-testhttp\n")
	is.Equal(h.mustGrove("session", "start", "one", "--repo", h.repo, "--", svc), "one live port 21150")
	// Bounded: on a hang (the old behaviour) the CLI is killed at 20 s.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "grove", "session", "start", "two", "--repo", h.repo, "--", svc)
	cmd.Dir, cmd.Env = h.work, h.env
	var errb strings.Builder
	cmd.Stderr = &errb
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	errOut := errb.String()
	var ee *exec.ExitError
	is.True(errors.As(err, &ee))
	is.Equal(ee.ExitCode(), 1)
	t.Logf("session start with a full range exited 1 after %s", took)
	budget := slow(time.Second) // the real binary: ~0.35 s on the 2-core box
	if raceBuild {
		budget *= 8 // every process of the test (CLI, daemon) is a -race binary: 6.5 s seen at load 40
	}
	is.True(took < budget) // at once, not a hang
	is.True(strings.Contains(errOut, "no free port in 21150-21151"))
	is.True(strings.Contains(errOut, "--port-range"))
	s := h.session("two")
	is.Equal(s.State, grove.SessionFailed)
	is.Equal(s.Port, 0)
	h.mustGrove("session", "close", "--force", "one")
	h.mustGrove("session", "close", "--force", "two")
	h.stopDaemon(syscall.SIGTERM)
}

// Issue 10 item 8: a service that exits at once makes the session dead with
// its exit code (start exits 1); a live service killed later is noticed;
// with --restart on-failure it is restarted up to the limit, then stays
// dead.
func TestSessionServiceExitIsDead(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.startDaemon("--port-range", "21160-21169")
	_, errOut, err := h.grove("session", "start", "crash", "--repo", h.repo, "--", "grove-testhttp", "-exit", "3")
	is.True(err != nil)
	is.True(strings.Contains(errOut, "session crash dead: service exited with code 3"))
	is.True(strings.Contains(errOut, "failing on purpose")) // the log's tail
	s := h.session("crash")
	is.Equal(s.State, grove.SessionDead)
	is.True(strings.Contains(h.mustGrove("session", "ls"), "dead"))
	var v struct {
		State   string     `json:"state"`
		Service *grove.Run `json:"service_run"`
	}
	is.NoErr(json.Unmarshal([]byte(h.mustGrove("session", "show", "--json", "crash")), &v))
	is.Equal(v.State, "dead")
	is.True(v.Service != nil && v.Service.ExitCode != nil && *v.Service.ExitCode == 3)
	is.Equal(countEvents(h.sessionEvents("crash"), "service_exited"), 1)
	doctor, _, _ := h.grove("doctor")
	is.True(strings.Contains(doctor, "crash"))

	// A live service that dies later.
	svc := h.writeAgent("svc.sh", "echo $$ > \"$GROVE_WORKTREE/svc.pid\"\nexec grove-testhttp\n")
	is.Equal(h.mustGrove("session", "start", "later", "--repo", h.repo, "--", svc), "later live port 21161")
	pid := readInt(t, filepath.Join(h.sessionWT("later"), "svc.pid"))
	is.NoErr(syscall.Kill(pid, syscall.SIGKILL))
	h.until(10*time.Second, "killed service noticed", func() bool { return h.session("later").State == grove.SessionDead })
	is.True(strings.Contains(h.session("later").Reason, "code 137"))

	// Restarted with backoff, up to the limit.
	_, _, err = h.grove("session", "start", "flaky", "--repo", h.repo, "--restart", "on-failure", "--max-restarts", "2", "--",
		"grove-testhttp", "-exit", "4")
	is.True(err != nil)
	h.until(30*time.Second, "restart limit reached", func() bool {
		s := h.session("flaky")
		return s.State == grove.SessionDead && strings.Contains(s.Reason, "restart limit (2) reached")
	})
	evs := h.sessionEvents("flaky")
	is.Equal(countEvents(evs, "service_started"), 3) // the start and two restarts
	is.Equal(countEvents(evs, "service_exited"), 3)
	s = h.session("flaky")
	is.True(s.RestartAt == nil)
	is.Equal(s.Restarts, 2)
	for _, k := range []string{"crash", "later", "flaky"} {
		h.mustGrove("session", "close", "--force", k)
	}
	h.stopDaemon(syscall.SIGTERM)
}
