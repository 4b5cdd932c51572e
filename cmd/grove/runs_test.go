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
