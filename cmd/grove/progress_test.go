package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// untilSettled waits until done reports true, failing only when what
// progress describes (a summary of the states that matter) has not changed
// for stall: a run that is slow because the box is loaded keeps going, a
// run that is stuck fails, naming what it was waiting for. limit caps the
// whole wait all the same.
func (h *harness) untilSettled(stall, limit time.Duration, what string, check func() (done bool, progress string)) {
	h.t.Helper()
	stall, limit = slow(stall), slow(limit)
	start, last := time.Now(), ""
	moved := start
	for {
		done, progress := check()
		if done {
			return
		}
		if progress != last {
			last, moved = progress, time.Now()
		}
		switch {
		case time.Since(moved) > stall:
			h.dumpState()
			h.t.Fatalf("stuck for %s waiting for %s: %s", stall, what, last)
		case time.Since(start) > limit:
			h.dumpState()
			h.t.Fatalf("timed out after %s waiting for %s: %s", limit, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// closedProgress reports whether every task of ids is closed (settled,
// worktree removed) and, for untilSettled, how many are in each state.
func (h *harness) closedProgress(ids []string) (bool, string) {
	h.t.Helper()
	counts := map[string]int{}
	closed := 0
	for _, id := range ids {
		if h.closed(id) {
			closed++
			continue
		}
		counts[string(h.task(id).State)]++
	}
	parts := []string{fmt.Sprintf("closed:%d", closed)}
	for st, n := range counts {
		parts = append(parts, fmt.Sprintf("%s:%d", st, n))
	}
	sort.Strings(parts[1:])
	return closed == len(ids), strings.Join(parts, " ")
}
