package supervise

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove/gitops/procscan"
)

// run runs spec in this process, without the supervisor's orphan reaper
// (which would take this test binary's other children).
func run(dir string, spec Spec, sigs <-chan os.Signal) Exit {
	return runAgent(dir, spec, sigs, nil)
}

func spec(t *testing.T, script string) Spec {
	t.Helper()
	dir := t.TempDir()
	return Spec{WorkDir: dir, Argv: []string{"/bin/sh", "-c", script}, Env: []string{"PATH=/usr/bin:/bin"},
		Grace: 300 * time.Millisecond, Sweep: true}
}

func TestExitCodePassesThrough(t *testing.T) {
	is := is.New(t)
	e := run(t.TempDir(), spec(t, "exit 7"), make(chan os.Signal))
	is.Equal(e.Reason, ReasonExited)
	is.Equal(e.Code, 7)
}

func TestAgentNotFound(t *testing.T) {
	is := is.New(t)
	s := spec(t, "")
	s.Argv = []string{"no-such-agent-xyz", "--flag"}
	e := run(t.TempDir(), s, make(chan os.Signal))
	is.Equal(e.Reason, ReasonNotFound)
	is.Equal(e.Message, "agent not found: no-such-agent-xyz")
}

func TestRelativeAgentResolvesInWorkDir(t *testing.T) {
	is := is.New(t)
	s := spec(t, "")
	is.NoErr(os.WriteFile(filepath.Join(s.WorkDir, "agent.sh"), []byte("#!/bin/sh\nexit 3\n"), 0o755))
	s.Argv = []string{"./agent.sh"}
	e := run(t.TempDir(), s, make(chan os.Signal))
	is.Equal(e.Reason, ReasonExited)
	is.Equal(e.Code, 3)
}

func TestTimeoutKillsTermIgnoringAgent(t *testing.T) {
	is := is.New(t)
	s := spec(t, `trap "" TERM; echo $$ > pid; while :; do sleep 0.05; done`)
	s.Timeout = 200 * time.Millisecond
	start := time.Now()
	e := run(t.TempDir(), s, make(chan os.Signal))
	is.Equal(e.Reason, ReasonTimeout)
	is.True(strings.Contains(e.Message, "timed out after 200ms"))
	// timeout + grace + cleanup, with room for a loaded machine (it took
	// 5.4 s at a load of 50 on 2 cores); a kill that never came hangs.
	is.True(time.Since(start) < 30*time.Second)
	pid := readPid(t, filepath.Join(s.WorkDir, "pid"))
	is.True(!processAlive(pid))
}

func TestSignalCancels(t *testing.T) {
	is := is.New(t)
	s := spec(t, `echo $$ > pid; sleep 600`)
	sigs := make(chan os.Signal, 1)
	go func() {
		waitFor(t, filepath.Join(s.WorkDir, "pid"))
		sigs <- syscall.SIGTERM
	}()
	e := run(t.TempDir(), s, sigs)
	is.Equal(e.Reason, ReasonCanceled)
	is.True(!processAlive(readPid(t, filepath.Join(s.WorkDir, "pid"))))
}

func TestSetsidEscapeeIsSwept(t *testing.T) {
	is := is.New(t)
	// The agent double-forks a sleeper into its own session and exits.
	s := spec(t, `setsid sh -c 'echo $$ > escapee; exec sleep 600' & sleep 0.2; exit 0`)
	e := run(t.TempDir(), s, make(chan os.Signal))
	is.Equal(e.Reason, ReasonExited)
	pid := readPid(t, filepath.Join(s.WorkDir, "escapee"))
	is.True(!processAlive(pid))
}

func TestProbeLifecycle(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	st, _, err := Probe(dir)
	is.NoErr(err)
	is.Equal(st, NotStarted)
	// A proc file without a live supervisor or exit: the agent was lost.
	p, err := Identify(os.Getpid())
	is.NoErr(err)
	is.True(p.Alive())
	is.NoErr(writeFileAtomic(filepath.Join(dir, ProcFile), []byte(`{"Pid":1}`)))
	st, e, err := Probe(dir)
	is.NoErr(err)
	is.Equal(st, Lost)
	is.Equal(e.Reason, ReasonLost)
	is.NoErr(finish(dir, Exit{Code: 0, Reason: ReasonExited}))
	st, e, err = Probe(dir)
	is.NoErr(err)
	is.Equal(st, Ended)
	is.Equal(e.Reason, ReasonExited)
}

func TestIdentityRejectsOtherStartTime(t *testing.T) {
	is := is.New(t)
	p, err := Identify(os.Getpid())
	is.NoErr(err)
	p.StartTime++
	is.True(!p.Alive())
	p.StartTime--
	p.BootID = "another-boot"
	is.True(!p.Alive())
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	waitFor(t, path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %v", path, err)
	}
	return pid
}

func waitFor(t *testing.T, path string) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s did not appear", path)
}

func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && s[i+2] != 'Z'
}

// TestSweepSparesOlderProcesses runs a real supervisor whose agent leaves
// an escapee behind while a process that was already working in the work
// dir before the run (a user's shell that went there) keeps running: the
// sweep takes only what is younger than the supervisor.
func TestSweepSparesOlderProcesses(t *testing.T) {
	is := is.New(t)
	s := spec(t, `setsid sh -c 'echo $$ > escapee; exec sleep 600' & sleep 0.2; exit 0`)
	user := exec.Command("sleep", "600")
	user.Dir = s.WorkDir
	is.NoErr(user.Start())
	t.Cleanup(func() { _ = user.Process.Kill(); _ = user.Wait() })
	// Start times count in clock ticks (10 ms): let one pass, so that the
	// supervisor is younger (a process of the very same tick is swept).
	born, err := procscan.StartTicks(user.Process.Pid)
	is.NoErr(err)
	deadline := time.Now().Add(10 * time.Second)
	for uptimeTicks(t) <= born+1 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	runSupervisor(t, s)
	escapee := readPid(t, filepath.Join(s.WorkDir, "escapee"))
	is.True(!processAlive(escapee))         // the agent's escapee was swept
	is.True(processAlive(user.Process.Pid)) // the older process was not
}

// uptimeTicks is the time since boot in clock ticks (/proc/uptime has
// hundredths of a second, the tick of every Linux box grove runs on).
func uptimeTicks(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	secs, _, _ := strings.Cut(string(b), " ")
	whole, frac, _ := strings.Cut(secs, ".")
	n, err := strconv.ParseUint(whole+frac, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
