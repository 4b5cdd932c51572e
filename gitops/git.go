package gitops

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"
)

// GitError is a git command that ran and failed.
type GitError struct {
	Args     []string // arguments after "git" (without the -c options the runner adds)
	ExitCode int      // process exit code; -1 if it was killed by a signal
	Stderr   string   // everything git wrote to stderr
}

// Error gives `git <args>: <first stderr line> (exit N)`.
func (e *GitError) Error() string {
	line := errorLine(e.Stderr)
	if line == "" {
		line = "failed"
	}
	return fmt.Sprintf("git %s: %s (exit %d)", strings.Join(e.Args, " "), line, e.ExitCode)
}

// errorLine is the line of git's stderr that says what went wrong: the
// first "fatal:" or "error:" line if there is one (git often prints
// progress first, e.g. "Preparing worktree"), else the first line.
func errorLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "fatal:") || strings.HasPrefix(l, "error:") {
			return l
		}
	}
	return firstLine(s)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

// exitCode returns the exit code of a *GitError in err's chain, or -1.
func exitCode(err error) int {
	var ge *GitError
	if errors.As(err, &ge) {
		return ge.ExitCode
	}
	return -1
}

// stderrOf returns the stderr of a *GitError in err's chain, or "".
func stderrOf(err error) string {
	var ge *GitError
	if errors.As(err, &ge) {
		return ge.Stderr
	}
	return ""
}

// baseArgs go before every git command: hooks never run and no auto-gc
// races a worktree add. Plumbing output must not depend on the user's
// configuration either, so nothing here is left to the config that
// changes how we parse output.
var baseArgs = []string{
	"-c", "gc.auto=0",
	"-c", "maintenance.auto=false",
	"-c", "core.hooksPath=/dev/null",
	"-c", "core.fsmonitor=false",
}

// envDropped are inherited variables that would point git at another
// repository, index or object store than the one we name.
var envDropped = []string{
	"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR",
	"GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
	"GIT_NAMESPACE", "GIT_PREFIX", "GIT_EXTERNAL_DIFF", "GIT_DIFF_OPTS",
	"GIT_PAGER", "PAGER", "GIT_EDITOR", "GIT_SEQUENCE_EDITOR",
	"GIT_TERMINAL_PROMPT", "LC_ALL", "GIT_QUARANTINE_PATH",
}

func gitEnv(extra []string) []string {
	env := make([]string, 0, len(os.Environ())+len(extra)+2)
outer:
	for _, kv := range os.Environ() {
		for _, d := range envDropped {
			if strings.HasPrefix(kv, d+"=") {
				continue outer
			}
		}
		env = append(env, kv)
	}
	env = append(env, "GIT_TERMINAL_PROMPT=0", "LC_ALL=C")
	return append(env, extra...)
}

// run runs git in dir (the current directory if dir is "") and returns its
// stdout. A non-zero exit is a *GitError; a git that could not start or was
// stopped by ctx gives a wrapped error.
func run(ctx context.Context, dir string, args ...string) ([]byte, error) {
	return runGit(ctx, dir, nil, nil, args...)
}

// runGit is run with extra environment (KEY=VALUE, appended last so it
// wins) and an optional stdin.
func runGit(ctx context.Context, dir string, env []string, stdin io.Reader, args ...string) ([]byte, error) {
	argv := make([]string, 0, len(baseArgs)+len(args))
	argv = append(argv, baseArgs...)
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, "git", argv...)
	cmd.Dir = dir
	cmd.Env = gitEnv(env)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Start()
	if err == nil {
		awaitExit(cmd.Process) // exitwait.go: on the poller, not in waitid
		err = cmd.Wait()
	}
	if err == nil {
		return stdout.Bytes(), nil
	}
	if ctx.Err() != nil {
		return stdout.Bytes(), fmt.Errorf("git %s: %w", strings.Join(args, " "), ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return stdout.Bytes(), &GitError{Args: args, ExitCode: ee.ExitCode(), Stderr: stderr.String()}
	}
	return stdout.Bytes(), fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
}

// transient reports whether err is a git failure worth retrying: another
// git process held a lock, or the worktree-add commondir race.
func transient(err error) bool {
	s := stderrOf(err)
	if s == "" {
		return false
	}
	for _, m := range []string{"could not lock", "Unable to create", ".lock': File exists", "failed to read", "index.lock"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	if strings.Contains(s, "/worktrees/") && strings.Contains(s, "No such file or directory") {
		// A worktree add whose half-made admin dir a concurrent
		// `git worktree prune` (a user's git gc) removed: git's own race.
		return true
	}
	if strings.Contains(s, "cannot lock ref") {
		// A compare-and-swap that lost, or a name clash, is an answer, not a race.
		for _, m := range []string{"but expected", "already exists", "exists; cannot create", "unable to resolve", "is at "} {
			if strings.Contains(s, m) {
				return false
			}
		}
		return true
	}
	return false
}

// Retry policy for transient failures: 5 tries, 20 ms doubling.
const (
	retryTries = 5
	retryFirst = 20 * time.Millisecond
)

// retry calls f until it succeeds, fails with a non-transient error, the
// tries run out, or ctx is done.
func retry(ctx context.Context, f func() error) error {
	wait := retryFirst
	for i := 1; ; i++ {
		err := f()
		if err == nil || i >= retryTries || !transient(err) {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait *= 2
	}
}

// runRetry is run with retry on transient failures.
func runRetry(ctx context.Context, dir string, args ...string) ([]byte, error) {
	var out []byte
	err := retry(ctx, func() error {
		var err error
		out, err = run(ctx, dir, args...)
		return err
	})
	return out, err
}

// lines splits git's newline-terminated output.
func lines(b []byte) []string {
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// fields0 splits NUL-terminated output.
func fields0(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

func trim(b []byte) string { return strings.TrimSpace(string(b)) }

// AgentEnv is environment to give processes grove runs in a worktree (the
// agent, its service) so that git commands they run never start an
// auto-gc, which could race a worktree being added.
func AgentEnv() []string {
	return []string{
		"GIT_CONFIG_COUNT=2",
		"GIT_CONFIG_KEY_0=gc.auto", "GIT_CONFIG_VALUE_0=0",
		"GIT_CONFIG_KEY_1=maintenance.auto", "GIT_CONFIG_VALUE_1=false",
	}
}
