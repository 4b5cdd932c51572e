package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Fixed identity and configuration for every process the harness starts:
// no user or system git config, the same author and committer, C locale.
var fixedEnv = []string{
	"GIT_CONFIG_GLOBAL=/dev/null",
	"GIT_CONFIG_NOSYSTEM=1",
	"GIT_AUTHOR_NAME=grove-bench",
	"GIT_AUTHOR_EMAIL=bench@grove.invalid",
	"GIT_AUTHOR_DATE=2024-01-01T00:00:00Z",
	"GIT_COMMITTER_NAME=grove-bench",
	"GIT_COMMITTER_EMAIL=bench@grove.invalid",
	"GIT_COMMITTER_DATE=2024-01-01T00:00:00Z",
	"GIT_TERMINAL_PROMPT=0",
	"LC_ALL=C",
}

// benchEnv is the inherited environment without anything that could point
// git or grove elsewhere (GIT_*, GROVE_* but GROVE_CPUPROFILE, LC_ALL),
// plus fixedEnv.
func benchEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GROVE_CPUPROFILE=") {
			env = append(env, kv)
			continue
		}
		if strings.HasPrefix(kv, "GIT_") || strings.HasPrefix(kv, "GROVE_") || strings.HasPrefix(kv, "LC_ALL=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, fixedEnv...)
}

// gitArgs go before every git command the harness runs: no auto-gc or
// maintenance racing the measurements, no hooks.
var gitArgs = []string{"-c", "gc.auto=0", "-c", "maintenance.auto=false", "-c", "core.hooksPath=/dev/null"}

// runner starts processes with an argv (never a shell) and the bench
// environment.
type runner struct {
	env []string
}

// cmd builds a command in dir with the bench environment plus extra
// (KEY=VALUE, appended so it wins).
func (r runner) cmd(ctx context.Context, dir string, extra []string, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, name, args...)
	c.Dir = dir
	c.Env = append(append([]string(nil), r.env...), extra...)
	c.WaitDelay = 5 * time.Second
	return c
}

// output runs the command and returns its stdout; a failure carries the
// command line and the first lines of stderr.
func output(c *exec.Cmd, stdin io.Reader) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c.Stdin = stdin
	c.Stdout = &stdout
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(c.Args, " "), err, clipLines(stderr.String(), 5))
	}
	return stdout.Bytes(), nil
}

// git runs git with gitArgs in dir and returns its stdout.
func (r runner) git(ctx context.Context, dir string, args ...string) ([]byte, error) {
	return output(r.cmd(ctx, dir, nil, "git", append(append([]string(nil), gitArgs...), args...)...), nil)
}

// gitIn is git with stdin.
func (r runner) gitIn(ctx context.Context, dir string, stdin io.Reader, args ...string) ([]byte, error) {
	return output(r.cmd(ctx, dir, nil, "git", append(append([]string(nil), gitArgs...), args...)...), stdin)
}

// clipLines keeps the first n lines of s, trimmed.
func clipLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, " | ")
}
