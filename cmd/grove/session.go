package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
)

func (a *app) sessionCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "session",
		Short: "Long-lived worktrees that successive tasks reuse, with an optional service",
		Long: `A session is a named worktree (its key is yours, e.g. chat-42) that tasks
submitted with --session KEY reuse one at a time, in order. Each task's diff
holds only its own work; after an apply the session's base moves forward.
With --serve, a service (a dev server, an agent server) runs in it under a
supervisor, on a port leased from the daemon's --port-range and given to it
and to every task as GROVE_PORT. An idle session has its service stopped
(evicted); the next task or resume starts it again on the same port.`,
		Example: `  grove session start chat-42 --repo . --serve "npm run dev"
  grove submit --session chat-42 -- my-agent --prompt "add a button"
  grove session ls
  grove session close chat-42`,
	}
	c.AddCommand(a.sessionStartCmd(), a.sessionLsCmd(),
		a.sessionOpCmd(jobs.SessionStop, "Stop a session's service; its worktree stays", grove.SessionEvicted),
		a.sessionOpCmd(jobs.SessionResume, "Start a stopped session's service again", grove.SessionLive),
		a.sessionCloseCmd())
	return c
}

func (a *app) sessionStartCmd() *cobra.Command {
	var (
		req   jobs.SessionRequest
		serve string
	)
	c := &cobra.Command{
		Use:   "start KEY [--repo DIR] [--base REF] [--serve CMD | -- SERVICE ARGS...]",
		Short: "Create a session: its worktree, and its service if any",
		Example: `  grove session start chat-42 --repo .
  grove session start web --serve "python3 -m http.server"
  grove session start web -- ./serve.sh --port-from-env`,
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			dash := c.ArgsLenAtDash()
			if (dash < 0 && len(args) != 1) || dash > 1 || (dash == 0) {
				return grove.Userf(grove.ErrUsage, "usage: "+c.UseLine(), "session start needs one KEY")
			}
			req.Key = args[0]
			if dash == 1 {
				req.Serve = args[1:]
			} else if serve != "" {
				req.Serve = strings.Fields(serve) // split on spaces; no shell
			}
			if err := a.open(ctx); err != nil {
				return err
			}
			if err := a.intents().StartSession(ctx, req); err != nil {
				return err
			}
			s, ok, err := a.settleSession(ctx, req.Key, "start", func(s grove.Session, started bool) bool {
				return started && (len(s.Serve) == 0 || s.Port != 0)
			})
			if err != nil || !ok {
				return err
			}
			return a.printSessionLine(s)
		},
	}
	c.Flags().StringVar(&req.RepoDir, "repo", ".", "any path inside the repository's work tree")
	c.Flags().StringVar(&req.Base, "base", "", "commit or branch to start from (default: the main checkout's branch)")
	c.Flags().StringVar(&serve, "serve", "", "service command, split on spaces (no shell); or give it after --")
	return c
}

func (a *app) sessionOpCmd(op, short, want string) *cobra.Command {
	return &cobra.Command{
		Use:     op + " KEY",
		Short:   short,
		Example: fmt.Sprintf("  grove session %s chat-42", op),
		Args:    exactArgs(1, "a session key"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			if err := a.open(ctx); err != nil {
				return err
			}
			if err := a.intents().SessionOp(ctx, args[0], op, false); err != nil {
				return err
			}
			s, ok, err := a.settleSession(ctx, args[0], op, func(s grove.Session, _ bool) bool { return s.State == want })
			if err != nil || !ok {
				return err
			}
			return a.printSessionLine(s)
		},
	}
}

func (a *app) sessionCloseCmd() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:     "close KEY [--force]",
		Short:   "Stop the service, remove the worktree (through the at-risk gate), free the port",
		Example: "  grove session close chat-42\n  grove session close --force chat-42   # snapshot first",
		Args:    exactArgs(1, "a session key"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			if err := a.open(ctx); err != nil {
				return err
			}
			key := args[0]
			events, err := a.st.SessionEvents(ctx, key)
			if err != nil {
				return err
			}
			before := len(events)
			if err := a.intents().SessionOp(ctx, key, jobs.SessionClose, force); err != nil {
				return err
			}
			refusal := ""
			s, ok, err := a.settleSession(ctx, key, "close", func(s grove.Session, _ bool) bool {
				if s.State == grove.SessionClosed {
					return true
				}
				evs, _ := a.st.SessionEvents(ctx, key)
				for _, e := range evs[min(before, len(evs)):] {
					if e.Kind == "close_refused" {
						refusal = e.Message
						return true
					}
				}
				return false
			})
			if err != nil || !ok {
				return err
			}
			if refusal != "" {
				return grove.Userf(grove.ErrAtRisk, "apply or discard its tasks, or grove session close --force "+key+" (snapshots first)",
					"session %s not closed: %s", key, refusal)
			}
			return a.printSessionLine(s)
		},
	}
	c.Flags().BoolVar(&force, "force", false, "snapshot an at-risk worktree first, then remove it")
	return c
}

func (a *app) sessionLsCmd() *cobra.Command {
	var asJSON, all bool
	c := &cobra.Command{
		Use:     "ls",
		Short:   "List sessions, least recently used first",
		Example: "  grove session ls\n  grove session ls --all --json",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			if err := a.open(ctx); err != nil {
				return err
			}
			ss, err := a.st.Sessions(ctx, all)
			if err != nil {
				return err
			}
			if asJSON {
				if ss == nil {
					ss = []grove.Session{}
				}
				return a.printJSON(ss)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tSTATE\tPORT\tIDLE\tREPO\tSERVICE")
			for _, s := range ss {
				port := "-"
				if s.Port != 0 {
					port = fmt.Sprint(s.Port)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.State, port, age(time.Since(s.LastUsedAt)),
					shortPath(s.RepoPath), clip(strings.Join(s.Serve, " "), 40))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&all, "all", false, "include closed sessions")
	return c
}

func (a *app) printSessionLine(s grove.Session) error {
	line := fmt.Sprintf("%s %s", s.ID, s.State)
	if s.Port != 0 {
		line += fmt.Sprintf(" port %d", s.Port)
	}
	_, err := fmt.Fprintln(a.stdout, line)
	return err
}

// settleSession waits (while a daemon runs) until done holds for the
// session; started reports whether its worktree is ready.
func (a *app) settleSession(ctx context.Context, key, what string, done func(s grove.Session, started bool) bool) (grove.Session, bool, error) {
	var missing time.Time
	for {
		s, err := a.st.Session(ctx, key)
		if err != nil {
			return s, false, err
		}
		started := a.st.SessionReady(ctx, key)
		if done(s, started) {
			return s, true, nil
		}
		if a.daemonGone(&missing) {
			fmt.Fprintf(a.stdout, "session %s %s queued; it runs when grove serve is up\n", key, what)
			return s, false, nil
		}
		if err := sleepCtx(ctx, 30*time.Millisecond); err != nil {
			return s, false, err
		}
	}
}
