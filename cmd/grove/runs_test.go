package main

import (
	"context"
	"os"
	"path/filepath"
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
