package main

import (
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// The daemon's JSON log: River's routine info lines are demoted to debug
// (gone at the default level, there with --debug), and durations are text.
func TestDaemonLog(t *testing.T) {
	is := is.New(t)
	f, err := os.CreateTemp(t.TempDir(), "log") // a file, not a terminal: JSON
	is.NoErr(err)
	defer f.Close()
	log := newLogger(f, slog.LevelInfo)
	river := riverLogger(log)
	river.Info("producer: Producer job counts", "num_jobs_running", 1)
	river.Info("JobCleaner: Ran successfully", "num_jobs_deleted", 0)
	river.Info("River client started", "client_id", "x")
	river.Warn("producer: Producer job counts") // only info is demoted
	log.Info("worktree ready", "took", 1523*time.Microsecond+417*time.Nanosecond)
	debug := newLogger(f, slog.LevelDebug)
	riverLogger(debug).Info("producer: Producer job counts", "queue", "git")
	b, err := os.ReadFile(f.Name())
	is.NoErr(err)
	out := string(b)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	is.Equal(len(lines), 4)
	is.True(strings.Contains(lines[0], `"msg":"River client started"`) && strings.Contains(lines[0], `"component":"river"`))
	is.True(strings.Contains(lines[1], `"level":"WARN"`))
	is.True(strings.Contains(lines[2], `"took":"1.523ms"`)) // not 1523417
	is.True(strings.Contains(lines[3], `"level":"DEBUG"`) && strings.Contains(lines[3], "Producer job counts"))
	is.True(!strings.Contains(out, "Ran successfully"))
	is.Equal(readableDuration(nil, slog.Duration("d", 90*time.Second)).Value.String(), "1m30s")
}
