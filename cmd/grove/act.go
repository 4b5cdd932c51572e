package main

import (
	"context"
	"fmt"
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
			case grove.StateApplied, grove.StateClosed:
				fmt.Fprintf(a.stdout, "%s applied to %s\n", id, t.TargetBranch)
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
	var force bool
	c := a.idCmd("close", "Remove a finished task's worktree and branch (never loses work)",
		"  grove close t1a2b3c4d\n  grove close --force t1a2b3c4d   # snapshot first, then remove",
		func(ctx context.Context, id string) error {
			t, err := a.st.Task(ctx, id)
			if err != nil {
				return err
			}
			ws, err := a.st.TaskWorkspace(ctx, id)
			if err == nil && ws.State != grove.WorkspaceRemoved && !force && t.SessionID == "" {
				repo, err := a.openRepo(ctx, t.RepoPath)
				if err != nil {
					return err
				}
				if rep := repo.AtRisk(ctx, ws.Path, jobs.GateOptions(t, ws)); !rep.Safe {
					var rs []string
					for _, r := range rep.Risks {
						s := r.Reason
						if r.Detail != "" {
							s += " (" + r.Detail + ")"
						}
						rs = append(rs, s)
					}
					return grove.Userf(grove.ErrAtRisk, "apply or discard it, or grove close --force "+id+" (snapshots first)",
						"task %s worktree holds work: %s", id, strings.Join(rs, "; "))
				}
			}
			if err := a.intents().Close(ctx, id, force); err != nil {
				return err
			}
			_, ok, err := a.settle(ctx, id, "close", func(grove.Task) bool {
				w, err := a.st.TaskWorkspace(ctx, id)
				return err != nil || w.State == grove.WorkspaceRemoved
			})
			if err != nil || !ok {
				return err
			}
			fmt.Fprintf(a.stdout, "%s closed\n", id)
			return nil
		})
	c.Flags().BoolVar(&force, "force", false, "snapshot an at-risk worktree to refs/grove/snapshots/ID, then remove it")
	return c
}
