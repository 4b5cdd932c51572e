package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/jobs/supervise"
)

func (a *app) logsCmd() *cobra.Command {
	var follow, events, setup, raw bool
	c := &cobra.Command{
		Use:     "logs ID",
		Short:   "Print a task's agent output (or its events)",
		Example: "  grove logs t1a2b3c4d\n  grove logs -f t1a2b3c4d\n  grove logs --events t1a2b3c4d\n  grove logs --setup t1a2b3c4d\n  grove logs --raw t1a2b3c4d   # a --tty agent's output with its escape sequences",
		Args:    exactArgs(1, "a task id"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			id, err := a.openTask(ctx, args[0])
			if err != nil {
				return err
			}
			if events {
				return a.printEvents(ctx, id, follow)
			}
			if err := a.onThisHost(ctx, id, "logs"); err != nil {
				return err
			}
			if setup {
				return a.printSetupLog(ctx, id)
			}
			name := supervise.LogFile
			if raw {
				name = supervise.TTYRawFile
			}
			return a.printLog(ctx, id, follow, name)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the agent ends")
	c.Flags().BoolVar(&events, "events", false, "print the task's audit events instead")
	c.Flags().BoolVar(&setup, "setup", false, "print the output of the worktree's setup commands (.grove.toml setup) instead")
	c.Flags().BoolVar(&raw, "raw", false, "a --tty agent's output as it wrote it, escape sequences and all (the log is plain text)")
	return c
}

func (a *app) printEvents(ctx context.Context, id string, follow bool) error {
	var last int64
	for {
		evs, err := a.st.Events(ctx, id, last)
		if err != nil {
			return err
		}
		for _, e := range evs {
			fmt.Fprintf(a.stdout, "%s  %-14s %s\n", e.At.Format(time.RFC3339), e.Kind, e.Message)
			last = e.ID
		}
		if !follow {
			return nil
		}
		t, err := a.st.Task(ctx, id)
		if err != nil {
			return err
		}
		if t.State.Settled() {
			return nil
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// printLog prints file name of the task's latest run (the log, or a
// terminal's raw recording).
func (a *app) printLog(ctx context.Context, id string, follow bool, name string) error {
	var dir string
	for {
		r, err := a.st.LatestAgentRun(ctx, id)
		if err == nil {
			dir = r.Dir
			break
		}
		if !errors.Is(err, grove.ErrNotFound) {
			return err
		}
		if !follow {
			return grove.Userf(grove.ErrNotFound, "wait for it to start, or use: grove logs -f "+id, "task %s has not started an agent yet", id)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	f, err := os.Open(filepath.Join(dir, name))
	if errors.Is(err, os.ErrNotExist) && name == supervise.TTYRawFile {
		return grove.Userf(grove.ErrNotFound, "grove logs "+id+" prints its output", "task %s has no terminal recording (not a --tty task)", id)
	}
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	for {
		if _, err := io.Copy(a.stdout, f); err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		if !follow {
			return nil
		}
		if _, ended, _ := supervise.ReadExit(dir); ended || !supervise.Alive(dir) {
			_, err := io.Copy(a.stdout, f)
			return err
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (a *app) diffCmd() *cobra.Command {
	var stat bool
	c := &cobra.Command{
		Use:     "diff ID",
		Short:   "Print the change a task produced (binary-safe patch)",
		Example: "  grove diff t1a2b3c4d\n  grove diff --stat t1a2b3c4d\n  grove diff t1a2 | git apply --check",
		Args:    exactArgs(1, "a task id"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			id, err := a.openTask(ctx, args[0])
			if err != nil {
				return err
			}
			ch, err := a.st.Change(ctx, id)
			if errors.Is(err, grove.ErrNotFound) {
				t, _ := a.st.Task(ctx, id)
				return grove.Userf(grove.ErrNotFound, "wait for it: grove wait "+id, "task %s has no diff yet (it is %s)", id, t.State)
			}
			if err != nil {
				return err
			}
			if stat {
				for _, f := range ch.Files {
					name := f.Path
					if f.OldPath != "" {
						name = f.OldPath + " => " + f.Path
					}
					if f.Added < 0 {
						fmt.Fprintf(a.stdout, "%s\tbin\t%s\n", f.Status, name)
					} else {
						fmt.Fprintf(a.stdout, "%s\t+%d -%d\t%s\n", f.Status, f.Added, f.Deleted, name)
					}
				}
				fmt.Fprintf(a.stdout, "%d files changed, +%d -%d\n", len(ch.Files), ch.Added, ch.Deleted)
				return nil
			}
			if err := a.onThisHost(ctx, id, "diff"); err != nil {
				return err
			}
			t, err := a.st.Task(ctx, id)
			if err != nil {
				return err
			}
			repo, err := a.openRepo(ctx, t.RepoPath)
			if err != nil {
				return err
			}
			patch, err := repo.Diff(ctx, ch.BaseCommit, ch.HeadCommit)
			if err != nil {
				return err
			}
			_, err = a.stdout.Write(patch)
			return err
		},
	}
	c.Flags().BoolVar(&stat, "stat", false, "per-file summary instead of the patch")
	return c
}

func (a *app) waitCmd() *cobra.Command {
	var asJSON, untilWaiting bool
	c := &cobra.Command{
		Use:   "wait ID...",
		Short: "Wait until tasks reach review or an end state",
		Long: `wait returns when every task is in review or an end state. Its exit code
is the agent's (the first non-zero one over several tasks), or 1 when grove
itself failed, canceled, or could not apply a task.`,
		Example: "  grove wait t1a2b3c4d && grove diff t1a2b3c4d\n  grove wait $(grove ls --state running --json | jq -r '.[].id')\n  grove wait --until-waiting t1a2b3c4d && grove send t1a2b3c4d yes --enter",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return grove.Userf(grove.ErrUsage, "usage: "+c.UseLine(), "wait needs at least one task id")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if err := a.open(c.Context()); err != nil {
				return err
			}
			if untilWaiting {
				if len(args) != 1 {
					return grove.Userf(grove.ErrUsage, "usage: grove wait --until-waiting ID", "--until-waiting takes one task id")
				}
				return a.waitUntilWaiting(c.Context(), args[0])
			}
			tasks, err := a.waitTasks(c.Context(), args, !asJSON)
			if err != nil || !asJSON {
				return err
			}
			outs, err := a.taskOuts(c.Context(), tasks)
			if err != nil {
				return err
			}
			return a.printJSON(outs)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print the tasks as JSON when done")
	c.Flags().BoolVar(&untilWaiting, "until-waiting", false, "return (exit 0) once the --tty agent waits for input; exit 1 if the task ends first")
	return c
}

// exitCodeOf is the code `wait` reports for a settled task.
func exitCodeOf(t grove.Task) int {
	switch t.State {
	case grove.StateFailed, grove.StateCanceled, grove.StateConflict:
		return exitFailure
	}
	if t.ExitCode != nil {
		return *t.ExitCode
	}
	return exitOK
}

// waitGap is the least time between two reads of the tasks grove wait
// waits for: what a task's end may be noticed late by.
const waitGap = 40 * time.Millisecond

// waitTasks waits until every task of args is done (Task.WaitOver), sets the
// exit code (exitCodeOf the first that is not 0) and returns the tasks.
// With sayErrors, a task's error is printed on stderr.
func (a *app) waitTasks(ctx context.Context, args []string, sayErrors bool) ([]grove.Task, error) {
	ids := make([]string, len(args))
	for i, arg := range args {
		id, err := a.resolve(ctx, arg)
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	start, lastNote := time.Now(), time.Now()
	tty := isTerminal(a.stderr)
	commits := a.st.WatchCommits() // re-read on a commit, not every 50 ms
	defer commits.Close()
	// The daemon tells when to look (jobs/wait_socket.go), asked once a
	// read found a task not over; asked is false until then.
	var daemon *jobs.DaemonWait
	asked := a.st.Postgres()
	defer func() { daemon.Close() }()
	var tasks []grove.Task
	lastRead := time.Now()
	for {
		tasks = tasks[:0]
		pending := 0
		var waitingOn grove.Task
		for _, id := range ids {
			t, err := a.st.Task(ctx, id)
			if err != nil {
				return nil, err
			}
			if !t.WaitOver() {
				pending++
				waitingOn = t
			}
			tasks = append(tasks, t)
		}
		if pending == 0 {
			break
		}
		if time.Since(lastNote) > 5*time.Second {
			lastNote = time.Now()
			note := fmt.Sprintf("waiting for %d task(s): %s is %s (%s)", pending, waitingOn.ID, waitingOn.State,
				time.Since(start).Round(time.Second))
			if _, up := daemonPid(a.home); !up {
				note += "; no daemon is running on this home: start grove serve"
			}
			if tty {
				fmt.Fprintf(a.stderr, "\r%s", note)
			} else {
				fmt.Fprintln(a.stderr, note)
			}
		}
		if !asked {
			daemon, asked = jobs.WaitThroughDaemon(ctx, a.home, ids), true
		}
		if daemon != nil {
			// Look again when the daemon says the tasks are over, and
			// every second meanwhile (for the note, and in case).
			over, gone := daemon.Next(ctx, time.Second)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if over || gone {
				daemon.Close()
				daemon = nil
			}
			continue
		}
		if err := commits.Wait(ctx, time.Second); err != nil {
			return nil, err
		}
		// A busy daemon writes dozens of times a second; look again at
		// most every waitGap (it was ~57 reads a second, 150 ms of CPU for
		// one task's 1.8 s wait).
		if gap := waitGap - time.Since(lastRead); gap > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(gap):
			}
		}
		lastRead = time.Now()
	}
	if tty && time.Since(start) > 5*time.Second {
		fmt.Fprintln(a.stderr)
	}
	code := exitOK
	for _, t := range tasks {
		if c := exitCodeOf(t); c != 0 && code == 0 {
			code = c
		}
		if sayErrors && t.Error != "" {
			fmt.Fprintf(a.stderr, "grove: task %s %s: %s\n", t.ID, t.State, t.Error)
		}
	}
	a.code = code
	return tasks, nil
}
