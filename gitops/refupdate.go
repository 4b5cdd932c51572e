package gitops

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Ref updates through kept `git update-ref --stdin` processes.
//
// A git process costs 10–15 ms of CPU on a small box, and a task moves
// grove's own refs four times (its branch created and deleted, its change
// kept under refs/grove/tasks, the trash's pins). In a long-lived process
// (the daemon, after KeepRefUpdaters) each repository and reflog message
// gets one `git update-ref -m <msg> --stdin` that stays up between
// updates: every update is one transaction of its own (`start`, the
// commands, `prepare`, `commit`), so git still does all of it — locking,
// compare-and-swap, packed refs, reflogs — all or nothing, as a one-shot
// update-ref would. A transaction git refuses ends that process (update-ref
// dies on an error); the next update starts another, and an update that
// was waiting for the ended process runs as a one-shot. A process left
// idle for keptIdle exits. Elsewhere (the CLI) every update is a one-shot
// process, as before.

// keptIdle is how long a kept update-ref process waits for work before it
// is closed.
const keptIdle = 10 * time.Second

var updaters struct {
	sync.Mutex
	on    bool
	procs map[updaterKey]*refUpdater
}

type updaterKey struct{ commonDir, msg string }

// KeepRefUpdaters makes this process's ref updates go through kept
// update-ref processes (on) or one-shot ones (off, the default; it also
// closes the kept ones).
func KeepRefUpdaters(on bool) {
	updaters.Lock()
	updaters.on = on
	procs := updaters.procs
	updaters.procs = nil
	updaters.Unlock()
	for _, u := range procs {
		u.close()
	}
}

// refUpdater is one kept `git update-ref -m msg --stdin` in a repository.
type refUpdater struct {
	key updaterKey

	mu     sync.Mutex // one transaction at a time
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr bytes.Buffer // read once the process has been waited for
	idle   *time.Timer
	closed bool
}

// updateRefs runs cmds (update-ref --stdin commands such as "create <ref>
// <oid>", "update <ref> <new> [<old>]", "delete <ref> [<old>]") as one
// transaction in the repository whose common dir is commonDir, with
// reflog message msg. A refusal is a *GitError carrying git's message, as
// from a one-shot update-ref. Names and ids must hold no newline (the
// callers validate them).
func updateRefs(ctx context.Context, commonDir, msg string, cmds ...string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("update refs: %w", err)
	}
	for _, c := range cmds {
		if strings.ContainsAny(c, "\n\x00") {
			return fmt.Errorf("update refs: invalid command %q", c)
		}
	}
	updaters.Lock()
	on := updaters.on
	updaters.Unlock()
	oneShot := func() error {
		in := strings.Join(cmds, "\n") + "\n"
		_, err := runGit(ctx, commonDir, nil, strings.NewReader(in), "update-ref", "-m", msg, "--stdin")
		return err
	}
	if !on {
		return oneShot()
	}
	u, err := keptUpdater(commonDir, msg)
	if err != nil {
		return err
	}
	started, err := u.transaction(ctx, cmds)
	if err == nil || started || ctx.Err() != nil {
		return err
	}
	// The process ended before it read this transaction (another caller's
	// refusal or cancelled context ended it, idle close, killed): it did
	// nothing of it. A one-shot process does it, so that a burst of
	// refusals cannot starve the others' updates.
	return oneShot()
}

// keptUpdater returns the running updater of (commonDir, msg), started if
// needed.
func keptUpdater(commonDir, msg string) (*refUpdater, error) {
	updaters.Lock()
	defer updaters.Unlock()
	k := updaterKey{commonDir, msg}
	if u := updaters.procs[k]; u != nil {
		return u, nil
	}
	u := &refUpdater{key: k}
	// --git-dir by its path, from "/": a repository moved away while the
	// process lives must not keep receiving the updates meant for the
	// path (a process's working directory follows the directory).
	argv := append(append([]string{}, baseArgs...), "--git-dir="+commonDir, "update-ref", "-m", msg, "--stdin")
	u.cmd = exec.Command("git", argv...)
	u.cmd.Dir = "/"
	u.cmd.Env = gitEnv(nil)
	u.cmd.Stderr = &u.stderr
	stdin, err := u.cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("update refs: %w", err)
	}
	stdout, err := u.cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("update refs: %w", err)
	}
	if err := u.cmd.Start(); err != nil {
		return nil, fmt.Errorf("update refs: start git: %w", err)
	}
	u.stdin, u.out = stdin, bufio.NewReader(stdout)
	u.idle = time.AfterFunc(keptIdle, u.close)
	if updaters.procs == nil {
		updaters.procs = map[updaterKey]*refUpdater{}
	}
	updaters.procs[k] = u
	return u, nil
}

// transaction runs cmds as one transaction. started reports whether git
// began it (said "start: ok"); when it did not, nothing was changed.
func (u *refUpdater) transaction(ctx context.Context, cmds []string) (started bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false, errors.New("update refs: process closed")
	}
	u.idle.Stop()
	stop := context.AfterFunc(ctx, func() { _ = u.cmd.Process.Kill() })
	defer func() {
		if !stop() && !u.closed {
			// ctx ended after all: its kill is on its way to this
			// process, so no later transaction may use it.
			u.closeLocked()
		}
	}()
	var b strings.Builder
	b.WriteString("start\n")
	for _, c := range cmds {
		b.WriteString(c)
		b.WriteByte('\n')
	}
	b.WriteString("prepare\ncommit\n")
	_, werr := io.WriteString(u.stdin, b.String())
	for _, want := range []string{"start: ok", "prepare: ok", "commit: ok"} {
		line, rerr := u.out.ReadString('\n')
		if rerr != nil || strings.TrimSuffix(line, "\n") != want {
			return started, u.failed(ctx, cmds, werr)
		}
		started = true
	}
	u.idle.Reset(keptIdle)
	return true, nil
}

// failed ends u's process after a transaction it did not finish and
// returns the error to report: git's own (its stderr and exit code, as a
// *GitError) when it refused, or ctx's.
func (u *refUpdater) failed(ctx context.Context, cmds []string, werr error) error {
	u.closeLocked()
	args := append([]string{"update-ref", "--stdin"}, cmds...)
	if ctx.Err() != nil {
		return fmt.Errorf("git %s: %w", strings.Join(args, " "), ctx.Err())
	}
	code := u.cmd.ProcessState.ExitCode()
	if msg := strings.TrimSpace(u.stderr.String()); msg != "" || code > 0 {
		return &GitError{Args: args, ExitCode: code, Stderr: u.stderr.String()}
	}
	if werr != nil {
		return fmt.Errorf("git %s: %w", strings.Join(args, " "), werr)
	}
	return fmt.Errorf("git %s: the process ended without an answer", strings.Join(args, " "))
}

// close ends u's process (idle, or KeepRefUpdaters).
func (u *refUpdater) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closeLocked()
}

// closeLocked closes stdin (git aborts a transaction it has not
// committed and exits), waits for the process and forgets u. u.mu is held.
func (u *refUpdater) closeLocked() {
	if u.closed {
		return
	}
	u.closed = true
	u.idle.Stop()
	updaters.Lock()
	if updaters.procs[u.key] == u {
		delete(updaters.procs, u.key)
	}
	updaters.Unlock()
	_ = u.stdin.Close()
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(5 * time.Second): // a git that does not exit on EOF
			_ = u.cmd.Process.Kill()
		}
	}()
	_ = u.cmd.Wait()
	close(done)
}
