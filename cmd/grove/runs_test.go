package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// waitEvent polls until task id has an event of kind.
func (h *harness) waitEvent(limit time.Duration, id, kind string) {
	h.t.Helper()
	h.until(limit, "event "+kind+" of "+id, func() bool {
		evs, err := h.store().Events(context.Background(), id, 0)
		return err == nil && hasEvent(evs, kind)
	})
}

// A canceled task whose worktree the gate kept (an untracked file) runs
// again on retry, in the same worktree: the run job is inserted and the
// task reaches review (issue 10, item 4: it stayed queued forever).
func TestRetryWithKeptWorktreeRuns(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	counter := filepath.Join(h.work, "counter")
	// The first attempt leaves work and blocks; the second one ends.
	agent := h.writeAgent("agent.sh", `n=$(cat "$COUNTER" 2>/dev/null | wc -l)
echo "$GROVE_TASK_ID" >> "$COUNTER"
echo "attempt $n" > "work-$n.txt"
if [ "$n" -eq 0 ]; then exec sleep 600; fi
`)
	h.startDaemon()
	id := h.mustGrove("submit", "--repo", h.repo, "--env", "COUNTER="+counter, "--", agent)
	h.waitEvent(30*time.Second, id, "started")
	h.until(30*time.Second, "first attempt left its work", func() bool {
		_, err := os.Stat(filepath.Join(h.home, "worktrees"))
		ws, werr := h.store().TaskWorkspace(context.Background(), id)
		if err != nil || werr != nil {
			return false
		}
		_, err = os.Stat(filepath.Join(ws.Path, "work-0.txt"))
		return err == nil
	})
	h.mustGrove("cancel", id)
	h.waitEvent(30*time.Second, id, "close_refused") // kept: the untracked file is at risk
	is.Equal(h.task(id).State, grove.StateCanceled)

	h.mustGrove("retry", id)
	h.until(30*time.Second, "retried task in review", func() bool { return h.task(id).State == grove.StateReview })
	task := h.task(id)
	is.Equal(task.State, grove.StateReview)
	is.Equal(task.Attempt, 2)
	is.Equal(countLines(t, counter), map[string]int{id: 2})
	is.True(h.diffHas(id, "attempt 1"))
	h.stopDaemon(syscall.SIGTERM)
}

// doctor checks that the home is writable by this user with a real file,
// prints the home's real mode, and names the fix (issue 10, item 9: a
// read-only home passed). As root, permission bits do not bind, so doctor
// runs without CAP_DAC_OVERRIDE (setpriv) there.
func TestDoctorHomeNotWritable(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.mustGrove("ls") // creates the home
	doctor := func() (string, error) {
		args := []string{"grove", "doctor"}
		if os.Geteuid() == 0 {
			sp, err := exec.LookPath("setpriv")
			if err != nil {
				t.Skip("running as root without setpriv: cannot make a directory unwritable")
			}
			args = append([]string{sp, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"}, args...)
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir, cmd.Env = h.work, h.env
		out, err := cmd.Output()
		return string(out), err
	}
	out, err := doctor()
	is.NoErr(err)
	is.True(strings.Contains(out, "(mode 0700)"))

	is.NoErr(os.Chmod(h.home, 0o500))
	defer os.Chmod(h.home, 0o700)
	out, err = doctor()
	t.Logf("doctor on a 0500 home:\n%s", out)
	is.True(err != nil) // exit 1: a problem
	is.True(regexp.MustCompile(`(?m)^PROBLEM\s+home\s+.*\(mode 0500\) is not writable by you`).MatchString(out))
	is.True(strings.Contains(out, "hint: chmod 700 "+h.home))
	is.True(!strings.Contains(out, "(mode 0700)"))
}

// onceAgent is an agent that appends its task id to $COUNTER when it
// starts, and "DOUBLE" when another copy of it is running at that moment.
const onceAgent = `if ! mkdir "$COUNTER.running" 2>/dev/null; then echo DOUBLE >> "$COUNTER"; fi
echo "$GROVE_TASK_ID" >> "$COUNTER"
echo $$ > "$COUNTER.pid.tmp"; mv "$COUNTER.pid.tmp" "$COUNTER.pid"
`

// runningRun waits until task id's agent runs and returns its run row and
// the agent's pid.
func (h *harness) runningRun(id, counter string) (dir string, supervisor, agent int) {
	h.t.Helper()
	h.waitEvent(30*time.Second, id, "started")
	run, err := h.store().LatestAgentRun(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	h.until(30*time.Second, "agent pid written", func() bool { _, err := os.Stat(counter + ".pid"); return err == nil })
	return run.Dir, run.Pid, readInt(h.t, counter+".pid")
}

// kill -9 of a task's supervisor: the agent dies with it (parent-death
// signal), so the run is lost and a retry runs the agent once more, never
// two at a time (issue 10, item 3).
func TestSupervisorKillTakesAgentAlong(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	counter := filepath.Join(h.work, "counter")
	agent := h.writeAgent("agent.sh", onceAgent+`n=$(grep -c . "$COUNTER")
if [ "$n" -gt 1 ]; then rmdir "$COUNTER.running"; exit 0; fi
exec sleep 600
`)
	h.startDaemon()
	id := h.mustGrove("submit", "--repo", h.repo, "--env", "COUNTER="+counter, "--", agent)
	_, sup, pid := h.runningRun(id, counter)
	is.NoErr(syscall.Kill(sup, syscall.SIGKILL))
	h.until(5*time.Second, "agent killed with its supervisor", func() bool { return !alive(pid) })
	h.until(30*time.Second, "task failed (lost)", func() bool { return h.task(id).State == grove.StateFailed })
	is.True(strings.HasPrefix(h.task(id).Error, "agent lost: "))
	h.waitEvent(30*time.Second, id, "closed") // the failed task's close ran: a retry would wait for it
	is.NoErr(os.Remove(counter + ".running"))
	h.mustGrove("retry", id)
	h.until(30*time.Second, "retried task in review", func() bool { return h.task(id).State == grove.StateReview })
	is.Equal(countLines(t, counter), map[string]int{id: 2})
	h.stopDaemon(syscall.SIGTERM)
}

// kill -9 of the supervisor while a child of the agent escaped its group
// and directory (setsid, cd /): the run is not lost while the child lives,
// retry is refused, and cancel kills the child (issue 10, item 3).
func TestEscapedChildKeepsRunAlive(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	counter := filepath.Join(h.work, "counter")
	escapee := filepath.Join(h.work, "escapee.pid")
	agent := h.writeAgent("agent.sh", onceAgent+`cd / && setsid sh -c 'echo $$ > "$ESC.tmp"; mv "$ESC.tmp" "$ESC"; exec sleep 600' &
while [ ! -e "$ESC" ]; do sleep 0.02; done
exec sleep 600
`)
	h.startDaemon()
	id := h.mustGrove("submit", "--repo", h.repo, "--env", "COUNTER="+counter, "--env", "ESC="+escapee, "--", agent)
	_, sup, pid := h.runningRun(id, counter)
	h.until(30*time.Second, "child escaped", func() bool { _, err := os.Stat(escapee); return err == nil })
	epid := readInt(t, escapee)
	t.Cleanup(func() { // outside the harness's sweep (cwd /): never leak it
		if alive(epid) {
			_ = syscall.Kill(epid, syscall.SIGKILL)
		}
	})
	is.NoErr(syscall.Kill(sup, syscall.SIGKILL))
	h.until(5*time.Second, "agent killed with its supervisor", func() bool { return !alive(pid) })
	h.waitEvent(30*time.Second, id, "orphaned")
	is.True(alive(epid))
	is.Equal(h.task(id).State, grove.StateRunning) // not lost: a process of the run lives
	_, errOut, err := h.grove("retry", id)
	is.True(err != nil)
	is.True(strings.Contains(errOut, "running"))

	h.mustGrove("cancel", id)
	h.until(10*time.Second, "escaped child killed on cancel", func() bool { return !alive(epid) })
	h.until(30*time.Second, "task canceled", func() bool { return h.task(id).State == grove.StateCanceled })
	is.Equal(countLines(t, counter), map[string]int{id: 1})
	h.stopDaemon(syscall.SIGTERM)
}

// Deleting a running task's run directory (and restarting the daemon) does
// not make the run lost while its supervisor lives, nor start the agent a
// second time; retry is refused until it ends, then runs it once more.
func TestDeletedRunDirDoesNotRunTwice(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	counter := filepath.Join(h.work, "counter")
	release := filepath.Join(h.work, "release")
	agent := h.writeAgent("agent.sh", onceAgent+`n=$(grep -c . "$COUNTER")
if [ "$n" -gt 1 ]; then rmdir "$COUNTER.running"; exit 0; fi
while [ ! -e "$RELEASE" ]; do sleep 0.05; done
rmdir "$COUNTER.running"
`)
	h.startDaemon()
	id := h.mustGrove("submit", "--repo", h.repo, "--env", "COUNTER="+counter, "--env", "RELEASE="+release, "--", agent)
	dir, sup, pid := h.runningRun(id, counter)
	is.NoErr(os.RemoveAll(dir))
	h.waitEvent(30*time.Second, id, "orphaned")
	h.stopDaemon(syscall.SIGKILL)
	h.startDaemon()
	h.until(30*time.Second, "restarted daemon watches the run", func() bool {
		evs, err := h.store().Events(context.Background(), id, 0)
		n := 0
		for _, e := range evs {
			if e.Kind == "orphaned" {
				n++
			}
		}
		return err == nil && n == 2
	})
	is.True(alive(sup) && alive(pid))
	is.Equal(h.task(id).State, grove.StateRunning)
	_, _, err := h.grove("retry", id)
	is.True(err != nil)

	is.NoErr(os.WriteFile(release, nil, 0o644))
	h.until(30*time.Second, "task failed once its processes ended", func() bool { return h.task(id).State == grove.StateFailed })
	is.True(!alive(sup) && !alive(pid))
	h.waitEvent(30*time.Second, id, "closed")
	h.mustGrove("retry", id)
	h.until(30*time.Second, "retried task in review", func() bool { return h.task(id).State == grove.StateReview })
	is.Equal(countLines(t, counter), map[string]int{id: 2})
	h.stopDaemon(syscall.SIGTERM)
}
