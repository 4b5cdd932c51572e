package supervise

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove/gitops/procscan"
)

// startStandby starts a standby supervisor (this test binary, see
// TestMain) and sends it away at the end of the test.
func startStandby(t *testing.T) *Standby {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s, err := StartStandby(exe)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func waitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not end", what)
	}
}

// TestStandbyRunsAHandedRun hands a run to a standby: the agent runs in
// its work dir with the run's log as its output, the supervisor that
// recorded itself is the standby, it held the run's lock while running,
// and its exit is recorded as a cold supervisor's would be.
func TestStandbyRunsAHandedRun(t *testing.T) {
	is := is.New(t)
	sb := startStandby(t)
	s := spec(t, `echo "out $PWD"; echo err >&2; while [ ! -e go ]; do sleep 0.01; done; exit 5`)
	dir := filepath.Join(t.TempDir(), "run")
	st, err := sb.Run(dir, s)
	is.NoErr(err)
	is.Equal(st.Pid, sb.proc.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for status, _, _ := Probe(dir); status != Running && time.Now().Before(deadline); status, _, _ = Probe(dir) {
		time.Sleep(5 * time.Millisecond)
	}
	status, _, err := Probe(dir)
	is.NoErr(err)
	is.Equal(status, Running) // the handed lock is held by the standby
	is.NoErr(os.WriteFile(filepath.Join(s.WorkDir, "go"), nil, 0o600))
	waitDone(t, st.Done, "the standby")
	e, ok, err := ReadExit(dir)
	is.NoErr(err)
	is.True(ok)
	is.Equal(e.Code, 5)
	is.Equal(e.Reason, ReasonExited)
	p, err := ReadProc(dir)
	is.NoErr(err)
	is.Equal(p, sb.proc) // proc.json names the standby, as the run row does
	log, err := os.ReadFile(filepath.Join(dir, LogFile))
	is.NoErr(err)
	is.True(strings.Contains(string(log), "out "+s.WorkDir))
	is.True(strings.Contains(string(log), "err\n"))
	is.True(!sb.Alive()) // used up
	_, err = sb.Run(filepath.Join(t.TempDir(), "again"), s)
	is.True(err != nil) // a standby takes one run
}

// TestStandbyLeavesWhenSentAway: a standby that is closed (or whose
// daemon dies) exits without running anything.
func TestStandbyLeavesWhenSentAway(t *testing.T) {
	sb := startStandby(t)
	if !sb.Alive() {
		t.Fatal("a fresh standby is not alive")
	}
	sb.Close()
	waitDone(t, sb.done, "a closed standby")
	if sb.Alive() {
		t.Fatal("a closed standby is alive")
	}
}

// TestStandbyDeadBeforeReadingFreesTheRun: a standby that dies with the
// run's message unread (stopped, handed a run, killed) takes the lock
// with it and never wrote its proc file, so the run reads as never
// started and run_agent may start it again; never as running or lost.
func TestStandbyDeadBeforeReadingFreesTheRun(t *testing.T) {
	is := is.New(t)
	sb := startStandby(t)
	pid := sb.proc.Pid
	is.NoErr(syscall.Kill(pid, syscall.SIGSTOP))
	dir := filepath.Join(t.TempDir(), "run")
	st, err := sb.Run(dir, spec(t, "touch ran"))
	is.NoErr(err) // the message sits in the socket
	is.NoErr(syscall.Kill(pid, syscall.SIGKILL))
	waitDone(t, st.Done, "the killed standby")
	status, _, err := Probe(dir)
	is.NoErr(err)
	is.Equal(status, NotStarted)
	_, err = os.Stat(filepath.Join(dir, ProcFile))
	is.True(os.IsNotExist(err))
}

// TestStandbySweepSparesProcessesOlderThanTheRun: the standby sweeps from
// the moment it got its run, not from its own start: a process that
// entered the work dir after the standby started but before the run is
// not the agent's and survives, while the agent's escapee is swept.
func TestStandbySweepSparesProcessesOlderThanTheRun(t *testing.T) {
	is := is.New(t)
	sb := startStandby(t)
	born, err := procscan.StartTicks(sb.proc.Pid)
	is.NoErr(err)
	waitTick := func(after uint64) {
		deadline := time.Now().Add(10 * time.Second)
		for uptimeTicks(t) <= after+1 && time.Now().Before(deadline) {
			runtime.Gosched()
		}
	}
	waitTick(born)
	s := spec(t, `setsid sh -c 'echo $$ > escapee; exec sleep 600' & sleep 0.2; exit 0`)
	user := exec.Command("sleep", "600")
	user.Dir = s.WorkDir
	is.NoErr(user.Start())
	t.Cleanup(func() { _ = user.Process.Kill(); _ = user.Wait() })
	userBorn, err := procscan.StartTicks(user.Process.Pid)
	is.NoErr(err)
	is.True(userBorn > born) // younger than the standby
	waitTick(userBorn)
	st, err := sb.Run(filepath.Join(t.TempDir(), "run"), s)
	is.NoErr(err)
	waitDone(t, st.Done, "the standby")
	escapee := readPid(t, filepath.Join(s.WorkDir, "escapee"))
	is.True(!processAlive(escapee))         // the agent's escapee was swept
	is.True(processAlive(user.Process.Pid)) // the process older than the run was not
}

// TestNowTicksIsAStartTime: a process started after NowTicks has a start
// time at or after it, in the same unit.
func TestNowTicksIsAStartTime(t *testing.T) {
	is := is.New(t)
	now, ok := procscan.NowTicks()
	is.True(ok)
	c := exec.Command("sleep", "5")
	is.NoErr(c.Start())
	defer func() { _ = c.Process.Kill(); _ = c.Wait() }()
	born, err := procscan.StartTicks(c.Process.Pid)
	is.NoErr(err)
	is.True(born >= now)
	is.True(born-now < 500) // within 5 s: the same clock
}
