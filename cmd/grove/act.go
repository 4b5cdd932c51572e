package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs"
)

func (a *app) openRepo(ctx context.Context, path string) (*gitops.Repo, error) {
	return gitops.Open(ctx, path)
}

// idCmd builds a command that takes one task id.
func (a *app) idCmd(use, short, example string, fn func(ctx context.Context, id string) error) *cobra.Command {
	return &cobra.Command{
		Use:     use + " ID",
		Short:   short,
		Example: example,
		Args:    exactArgs(1, "a task id"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			id, err := a.openTask(ctx, args[0])
			if err != nil {
				return err
			}
			return fn(ctx, id)
		},
	}
}

// daemonGone reports whether no daemon has served this home for a second
// and a half: a daemon that is just starting gets time to take its lock.
// missing holds when it was first seen absent.
func (a *app) daemonGone(missing *time.Time) bool {
	if _, up := daemonPid(a.home); up {
		*missing = time.Time{}
		return false
	}
	if missing.IsZero() {
		*missing = time.Now()
	}
	return time.Since(*missing) > 1500*time.Millisecond
}

// settle waits, while a daemon runs, until done(task) holds; without a
// daemon it says the request is queued. It returns the last task seen.
func (a *app) settle(ctx context.Context, id string, what string, done func(grove.Task) bool) (grove.Task, bool, error) {
	start := time.Now()
	var missing time.Time
	for {
		t, err := a.st.Task(ctx, id)
		if err != nil {
			return t, false, err
		}
		if done(t) {
			return t, true, nil
		}
		if a.daemonGone(&missing) {
			fmt.Fprintf(a.stdout, "%s %s queued; it runs when grove serve is up\n", id, what)
			return t, false, nil
		}
		if time.Since(start) > 3*time.Second && time.Since(start)%(5*time.Second) < 50*time.Millisecond {
			fmt.Fprintf(a.stderr, "waiting for %s of %s (%s)\n", what, id, time.Since(start).Round(time.Second))
		}
		if err := sleepCtx(ctx, 30*time.Millisecond); err != nil {
			return t, false, err
		}
	}
}

func (a *app) applyCmd() *cobra.Command {
	return a.idCmd("apply", "Apply a reviewed task's change to its target branch",
		"  grove apply t1a2b3c4d", func(ctx context.Context, id string) error {
			if err := a.intents().Apply(ctx, id); err != nil {
				return err
			}
			t, ok, err := a.settle(ctx, id, "apply", func(t grove.Task) bool { return t.State != grove.StateApplying })
			if err != nil || !ok {
				return err
			}
			switch t.State {
			case grove.StateApplied:
				out, err := a.taskOutOf(ctx, t)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%s applied to %s as %.12s\n", id, t.TargetBranch, out.AppliedCommit)
				return nil
			case grove.StateConflict:
				return grove.Userf(grove.ErrConflict, "rebase the task's work by hand (branch "+jobs.TaskBranch(id)+"), or grove discard "+id,
					"task %s not applied: %s", id, t.Error)
			default:
				return grove.Userf(grove.ErrConflict, "fix that, then grove apply "+id+" again", "task %s not applied: %s", id, t.Error)
			}
		})
}

func (a *app) discardCmd() *cobra.Command {
	return a.idCmd("discard", "Drop a task's change (kept at refs/grove/tasks/ID) and close it",
		"  grove discard t1a2b3c4d", func(ctx context.Context, id string) error {
			if err := a.intents().Discard(ctx, id); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s discarded\n", id)
			return nil
		})
}

func (a *app) cancelCmd() *cobra.Command {
	return a.idCmd("cancel", "Stop a queued or running task (TERM, grace, KILL)",
		"  grove cancel t1a2b3c4d", func(ctx context.Context, id string) error {
			t, err := a.st.Task(ctx, id)
			if err != nil {
				return err
			}
			if err := a.intents().Cancel(ctx, id, jobs.RunDir(a.home, id, t.Attempt)); err != nil {
				return err
			}
			t, ok, err := a.settle(ctx, id, "cancel", func(t grove.Task) bool { return t.State.Settled() })
			if err != nil || !ok {
				return err
			}
			fmt.Fprintf(a.stdout, "%s %s\n", id, t.State)
			return nil
		})
}

func (a *app) retryCmd() *cobra.Command {
	return a.idCmd("retry", "Run a failed or canceled task again",
		"  grove retry t1a2b3c4d", func(ctx context.Context, id string) error {
			if err := a.intents().Retry(ctx, id); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s queued again\n", id)
			return nil
		})
}

func (a *app) closeCmd() *cobra.Command {
	var force, dropIgnored bool
	c := a.idCmd("close", "Remove a finished task's worktree and branch (never loses work)",
		"  grove close t1a2b3c4d\n  grove close --force t1a2b3c4d   # snapshot first, then remove\n"+
			"  grove close --force --drop-ignored t1a2b3c4d   # snapshot without ignored files (over the size limit)",
		func(ctx context.Context, id string) error {
			after, err := a.st.LastEventID(ctx, id)
			if err != nil {
				return err
			}
			if dropIgnored && !force {
				return grove.Userf(grove.ErrUsage, "use it with --force", "--drop-ignored only applies to --force")
			}
			if err := a.intents().Close(ctx, id, force, dropIgnored); err != nil {
				return err
			}
			return a.awaitClose(ctx, id, after)
		})
	c.Flags().BoolVar(&force, "force", false, "snapshot an at-risk worktree to refs/grove/snapshots/ID, then remove it")
	c.Flags().BoolVar(&dropIgnored, "drop-ignored", false, "with --force: leave ignored files out of the snapshot (they stay in the trash until it is purged)")
	return c
}

// awaitClose waits for the daemon's answer to a close asked after event
// id after: the gate runs in one place, the daemon's removal. closed is
// exit 0; refused is exit 1 with the reasons (from the workspace's report);
// without a daemon the request stays queued (exit 0, said so).
func (a *app) awaitClose(ctx context.Context, id string, after int64) error {
	start := time.Now()
	var missing time.Time
	nextNote := 3 * time.Second
	for {
		evs, err := a.st.Events(ctx, id, after)
		if err != nil {
			return err
		}
		for _, e := range evs {
			after = e.ID
			switch e.Kind {
			case "closed", "reaped", "reap_pruned":
				fmt.Fprintf(a.stdout, "%s closed\n", id)
				return nil
			case "close_refused":
				return a.closeRefused(ctx, id)
			case "close_skipped", "close_failed":
				return grove.Userf(grove.ErrConflict, "see its state with: grove show "+id, "task %s not closed: %s", id, e.Message)
			case "close_error":
				fmt.Fprintf(a.stderr, "close of %s failed, retrying: %s\n", id, e.Message)
			}
		}
		if a.daemonGone(&missing) {
			fmt.Fprintf(a.stdout, "%s close queued; it runs when grove serve is up\n", id)
			return nil
		}
		if waited := time.Since(start); waited > nextNote {
			fmt.Fprintf(a.stderr, "waiting for close of %s (%s)\n", id, waited.Round(time.Second))
			nextNote += 5 * time.Second
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// closeRefused is the error for a refused close: the reasons the daemon's
// gate recorded, and what to do.
func (a *app) closeRefused(ctx context.Context, id string) error {
	reasons := "see grove show " + id
	ws, err := a.st.TaskWorkspace(ctx, id)
	if err == nil && ws.AtRisk != "" {
		var rep gitops.Report
		if json.Unmarshal([]byte(ws.AtRisk), &rep) == nil {
			reasons = riskText(rep.Risks)
		}
	}
	hint := "apply or discard it, or grove close --force " + id + " (snapshots first)"
	if err == nil && cwdInside(ws.Path) {
		hint = "you are inside it: cd out of " + ws.Path + " and run grove close " + id + " again"
	}
	return grove.Userf(grove.ErrAtRisk, hint, "task %s worktree holds work: %s", id, reasons)
}

// cwdInside reports whether this process's working directory is dir or
// inside it.
func cwdInside(dir string) bool {
	wd, err := os.Getwd()
	if err != nil || dir == "" {
		return false
	}
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	if r, err := filepath.EvalSymlinks(wd); err == nil {
		wd = r
	}
	return wd == dir || strings.HasPrefix(wd, dir+string(filepath.Separator))
}
