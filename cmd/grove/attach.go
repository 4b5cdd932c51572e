package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/jobs/supervise"
)

// defaultDetachKey detaches `grove attach` (as in telnet).
const defaultDetachKey = "ctrl-]"

func (a *app) attachCmd() *cobra.Command {
	var detach string
	c := &cobra.Command{
		Use:   "attach ID",
		Short: "Connect your terminal to a --tty agent's terminal (detach with Ctrl-])",
		Long: `attach connects your terminal to the terminal of a task submitted with
--tty: you see the recent screen, then everything the agent prints, and what
you type goes to the agent (Ctrl-C too). Your window size is passed on, and
again at every resize. Several people (or windows) can attach at once.

Press Ctrl-] (or the --detach-key) to detach: the agent runs on. When the
agent ends, attach prints its exit status and exits with its code. The
terminal belongs to the agent's supervisor, not to the daemon: attach works
while the daemon is down or restarting. Before the agent starts, attach waits
for it.`,
		Example: `  id=$(grove submit --tty -- my-agent)
  grove attach $id              # Ctrl-] detaches
  grove attach --detach-key ctrl-x $id`,
		Args: exactArgs(1, "a task id"),
		RunE: func(c *cobra.Command, args []string) error {
			key, err := parseDetachKey(detach)
			if err != nil {
				return err
			}
			ctx := c.Context()
			id, err := a.openLocalTask(ctx, args[0], "attach")
			if err != nil {
				return err
			}
			conn, dir, err := a.dialTerminal(ctx, id, true)
			if err != nil {
				return err
			}
			defer conn.Close()
			return a.attach(id, dir, conn, key)
		},
	}
	c.Flags().StringVar(&detach, "detach-key", defaultDetachKey, "the key that detaches: ctrl-<char>, e.g. ctrl-] or ctrl-\\")
	return c
}

// parseDetachKey turns "ctrl-]" into the byte the terminal sends for it.
func parseDetachKey(s string) (byte, error) {
	rest, ok := strings.CutPrefix(strings.ToLower(s), "ctrl-")
	if !ok || len(rest) != 1 {
		return 0, grove.Userf(grove.ErrUsage, "write it as ctrl-<char>, e.g. --detach-key 'ctrl-]'", "bad detach key %q", s)
	}
	c := strings.ToUpper(rest)[0]
	if c < 'A' || c > '_' {
		return 0, grove.Userf(grove.ErrUsage, "pick one of ctrl-a..ctrl-z, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_", "bad detach key %q", s)
	}
	return c & 0x1f, nil
}

// dialTerminal connects to the terminal of task id's current run. With
// wait, a task whose agent has not started yet is waited for.
func (a *app) dialTerminal(ctx context.Context, id string, wait bool) (conn *net.UnixConn, dir string, err error) {
	for {
		t, err := a.st.Task(ctx, id)
		if err != nil {
			return nil, "", err
		}
		if !t.Options.TTY {
			return nil, "", grove.Userf(grove.ErrUsage, "submit it with: grove submit --tty -- CMD...; grove logs "+id+" shows its output",
				"task %s does not run on a terminal", id)
		}
		if t.Attempt > 0 {
			dir = jobs.RunDir(a.home, id, t.Attempt)
			conn, err := supervise.DialTTY(dir)
			if err == nil {
				return conn, dir, nil
			}
			if !errors.Is(err, supervise.ErrNoTerminal) {
				return nil, "", err
			}
			if e, ended, _ := supervise.ReadExit(dir); ended {
				return nil, "", grove.Userf(grove.ErrConflict, "see its output with: grove logs "+id,
					"the agent of task %s has ended (%s, exit code %d)", id, e.Reason, e.Code)
			}
			if t.State == grove.StateRunning && !supervise.Alive(dir) {
				return nil, "", grove.Userf(grove.ErrConflict, "see grove show "+id, "the supervisor of task %s is gone: %v", id, err)
			}
		}
		if t.State != grove.StateQueued && t.State != grove.StatePreparing && t.State != grove.StateRunning {
			return nil, "", grove.Userf(grove.ErrConflict, "see its output with: grove logs "+id, "task %s is %s: its agent is not running", id, t.State)
		}
		if !wait {
			return nil, "", grove.Userf(grove.ErrConflict, "wait for it: grove attach "+id, "task %s has not started its agent yet", id)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return nil, "", err
		}
	}
}

// attach copies between the user's terminal and the agent's until the
// detach key, the agent's end, or a lost connection.
func (a *app) attach(id, dir string, conn *net.UnixConn, key byte) error {
	in, _ := a.stdin.(*os.File)
	raw := in != nil && isTerminal(in)
	if raw {
		restore, err := makeRaw(int(in.Fd()))
		if err != nil {
			return err
		}
		defer restore()
	}
	nl := "\n"
	if raw {
		nl = "\r\n"
	}
	sendSize := func() {
		if !raw {
			return
		}
		if ws, err := unix.IoctlGetWinsize(int(in.Fd()), unix.TIOCGWINSZ); err == nil && ws.Row > 0 {
			_ = supervise.WriteFrame(conn, supervise.FrameSize, supervise.SizePayload(ws.Row, ws.Col))
		}
	}
	sendSize()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGWINCH, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
	defer signal.Stop(sigs)

	detached := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := a.stdin.Read(buf)
			p := buf[:n]
			if i := bytes.IndexByte(p, key); i >= 0 {
				if i > 0 {
					_ = supervise.WriteFrame(conn, supervise.FrameInput, p[:i])
				}
				close(detached)
				return
			}
			if n > 0 && supervise.WriteFrame(conn, supervise.FrameInput, p) != nil {
				return
			}
			if err != nil {
				return // EOF: watch only
			}
		}
	}()
	frames := make(chan error, 1)
	var exit *supervise.Exit
	go func() {
		for {
			typ, p, err := supervise.ReadFrame(conn)
			if err != nil {
				frames <- err
				return
			}
			switch typ {
			case supervise.FrameOutput:
				if _, err := a.stdout.Write(p); err != nil {
					frames <- err
					return
				}
			case supervise.FrameExit:
				e, err := supervise.ExitPayload(p)
				if err == nil {
					exit = &e
				}
				frames <- nil
				return
			}
		}
	}()
	for {
		select {
		case <-detached:
			fmt.Fprintf(a.stderr, "%s[detached from task %s: the agent runs on; grove attach %s to come back]%s", nl, id, id, nl)
			return nil
		case s := <-sigs:
			if s == syscall.SIGWINCH {
				sendSize()
				continue
			}
			fmt.Fprintf(a.stderr, "%s[grove attach: %v, detached]%s", nl, s, nl)
			a.code = exitFailure
			return nil
		case err := <-frames:
			if exit == nil {
				if e, ok, _ := supervise.ReadExit(dir); ok {
					exit = &e
				} else {
					if raw {
						fmt.Fprint(a.stderr, "\r\n")
					}
					return grove.Userf(grove.ErrConflict, "see: grove show "+id,
						"lost the terminal of task %s: its supervisor ended without an exit status (%v)", id, err)
				}
			}
			fmt.Fprintf(a.stderr, "%s[task %s: agent %s, exit code %d]%s", nl, id, exit.Reason, exit.Code, nl)
			if exit.Code >= 0 {
				a.code = exit.Code
			} else {
				a.code = exitFailure
			}
			return nil
		}
	}
}

// makeRaw puts the terminal fd in raw mode (as cfmakeraw) and returns the
// function that restores it.
func makeRaw(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("read terminal mode: %w", err)
	}
	t := *old
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, fmt.Errorf("set raw mode: %w", err)
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

// stateLabel is the state `ls` and `show` print: "running (waiting)" while
// a terminal agent waits for input.
func (a *app) stateLabel(t grove.Task) string {
	if t.State == grove.StateRunning && t.Options.TTY && a.home != "" &&
		supervise.IsWaiting(jobs.RunDir(a.home, t.ID, t.Attempt)) {
		return string(t.State) + " (waiting)"
	}
	return string(t.State)
}

// waitUntilWaiting returns (exit 0) once task id's terminal agent waits for
// input; if the task settles first it is an error (exit 1): `grove wait`
// then gives its exit code.
func (a *app) waitUntilWaiting(ctx context.Context, arg string) error {
	id, err := a.resolve(ctx, arg)
	if err != nil {
		return err
	}
	for {
		t, err := a.st.Task(ctx, id)
		if err != nil {
			return err
		}
		if !t.Options.TTY {
			return grove.Userf(grove.ErrUsage, "only tasks submitted with --tty can wait for input", "task %s does not run on a terminal", id)
		}
		if t.State == grove.StateRunning && supervise.IsWaiting(jobs.RunDir(a.home, id, t.Attempt)) {
			return nil
		}
		if t.WaitOver() {
			return grove.Userf(grove.ErrConflict, "grove wait "+id+" gives its exit code",
				"task %s is %s: its agent ended without waiting for input", id, t.State)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}
