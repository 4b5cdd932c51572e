package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store/pgtest"
)

// newPGHarness is newHarness with every grove process (CLI, daemon, the
// test's own store) on a fresh database of the test PostgreSQL, through
// GROVE_DATABASE.
func newPGHarness(t *testing.T) *harness {
	t.Helper()
	dsn := pgtest.DSN(t)
	h := newHarness(t)
	h.database = dsn
	h.env = append(h.env, "GROVE_DATABASE="+dsn)
	return h
}

// On PostgreSQL a task goes the whole way (submit → run → diff → apply →
// close) with the daemon and the CLI in separate processes: the job
// reaches the daemon by LISTEN/NOTIFY, and the task is on the host's
// database, not in the home.
func TestPostgresTaskEndToEnd(t *testing.T) {
	is := is.New(t)
	h := newPGHarness(t)
	agent := h.writeAgent("agent.sh", `echo "$GROVE_TASK_ID" > "f-$GROVE_TASK_ID.txt"`+"\n")
	h.startDaemon()
	var ids []string
	for range 3 {
		ids = append(ids, h.mustGrove("submit", "--repo", h.repo, "--apply", "auto", "--", agent))
	}
	for _, id := range ids {
		h.until(60*time.Second, "task "+id+" applied and closed", func() bool { return h.closed(id) })
		is.Equal(h.task(id).State, grove.StateApplied)
		is.Equal(strings.TrimSpace(h.git("show", "main:f-"+id+".txt")), id)
	}
	out := h.mustGrove("ls")
	for _, id := range ids {
		is.True(strings.Contains(out, id))
	}
	// Nothing of it went to a SQLite file in the home.
	_, err := os.Stat(filepath.Join(h.home, "grove.db"))
	is.True(errors.Is(err, os.ErrNotExist))
	counts, err := h.store().CountTasks(context.Background())
	is.NoErr(err)
	is.Equal(counts[grove.StateApplied], len(ids))
	h.stopDaemon(syscall.SIGTERM)
}
