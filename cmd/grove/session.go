package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

type storeTxCLI = store.Tx

func (a *app) sessionCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "session",
		Short: "Long-lived worktrees that successive tasks reuse, with an optional service",
		Long: `A session is a named worktree (its key is yours, e.g. chat-42) that tasks
submitted with --session KEY reuse one at a time, in order. Each task's diff
holds only its own work; after an apply the session's base moves forward.
With --serve, a service (a dev server, an agent server) runs in it under a
supervisor, on a port leased from the daemon's --port-range and given to it
and to every task as GROVE_PORT. The port must be free before the service
starts, and the session is live only once the service listens on it; a
service that exits makes the session dead (with --restart on-failure it is
started again, with backoff, up to --max-restarts times). An idle session
(no task, no connection on its port for --idle-ttl) has its service stopped
(evicted); the next task or resume starts it again on the same port.
Changes made in the worktree between tasks are the session's own: they are
never part of a task's diff (grove session show and diff list them).`,
		Example: `  grove session start chat-42 --repo . --serve "npm run dev"
  grove submit --session chat-42 -- my-agent --prompt "add a button"
  grove session ls
  grove session show chat-42
  grove session close chat-42`,
	}
	c.AddCommand(a.sessionStartCmd(), a.sessionLsCmd(), a.sessionShowCmd(), a.sessionDiffCmd(),
		a.sessionOpCmd(jobs.SessionStop, "Stop a session's service and every process it started; its worktree stays", grove.SessionEvicted),
		a.sessionOpCmd(jobs.SessionResume, "Start a stopped or dead session's service again", grove.SessionLive),
		a.sessionCloseCmd())
	return c
}

func (a *app) sessionStartCmd() *cobra.Command {
	var (
		req   jobs.SessionRequest
		serve string
	)
	c := &cobra.Command{
		Use:   "start KEY [--repo DIR] [--base REF] [--restart no|on-failure|always] [--max-restarts N] [--serve CMD | -- SERVICE ARGS...]",
		Short: "Create a session: its worktree, and its service if any (exit 1 if it does not come up)",
		Long: `start creates the session's worktree and starts its service on a leased
port, and returns once the service listens on that port (the session is
live). It exits 1 with the reason if the service cannot be started: no free
port in the range, the port taken by another process, the service exits or
does not listen within the daemon's --ready-timeout.`,
		Example: `  grove session start chat-42 --repo .
  grove session start web --serve "python3 -m http.server --bind 127.0.0.1"   # port: $GROVE_PORT
  grove session start web --restart on-failure -- ./serve.sh`,
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
				req.Serve = []string{"sh", "-c", serve} // a shell line: $GROVE_PORT, pipes, && work
			}
			if err := a.open(ctx); err != nil {
				return err
			}
			before := a.sessionEventCount(ctx, req.Key)
			if err := a.intents().StartSession(ctx, req); err != nil {
				return err
			}
			return a.waitStarted(ctx, req.Key, "start", before)
		},
	}
	c.Flags().StringVar(&req.Restart, "restart", grove.RestartNo, "restart the service when it exits: no, on-failure (non-zero exit or signal) or always; backoff 1s, 2s, 4s... up to 30s")
	c.Flags().IntVar(&req.MaxRestarts, "max-restarts", 5, "restarts in a row before the session stays dead")
	c.Flags().StringVar(&req.RepoDir, "repo", ".", "any path inside the repository's work tree")
	c.Flags().StringVar(&req.Base, "base", "", "commit or branch to start from (default: the main checkout's branch)")
	c.Flags().StringVar(&serve, "serve", "", "service command line, run with sh -c (GROVE_PORT set); or give an argv after --")
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
			before := a.sessionEventCount(ctx, args[0])
			if err := a.intents().SessionOp(ctx, args[0], op, false); err != nil {
				return err
			}
			if op == jobs.SessionResume {
				return a.waitStarted(ctx, args[0], op, before)
			}
			s, ok, err := a.settleSession(ctx, args[0], op, func(s grove.Session, _ bool) bool {
				return s.State == want && a.serviceStopped(ctx, s.ID)
			})
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
		Use:   "ls",
		Short: "List sessions, least recently used first",
		Long: `ls lists sessions with their state (starting, live, evicted, dead, failed,
closed), port, last activity (a task, a start, a connection on the port) and
what it was. A dead or failed session's reason is in grove session show.`,
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
			fmt.Fprintln(tw, "KEY\tSTATE\tPORT\tACTIVE\tACTIVITY\tREPO\tSERVICE")
			for _, s := range ss {
				port := "-"
				if s.Port != 0 {
					port = fmt.Sprint(s.Port)
					if len(s.Serve) > 0 {
						port = fmt.Sprintf("http://127.0.0.1:%d", s.Port)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\t%s\t%s\n", s.ID, sessionStateText(s), port, age(time.Since(s.LastUsedAt)),
					clip(orDash(s.Activity), 28), shortPath(s.RepoPath), clip(strings.Join(s.Serve, " "), 40))
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&all, "all", false, "include closed sessions")
	return c
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sessionStateText is the state, with a pending restart.
func sessionStateText(s grove.Session) string {
	if s.State == grove.SessionDead && s.RestartAt != nil {
		return fmt.Sprintf("dead (restart %d/%d)", s.Restarts, s.MaxRestarts)
	}
	return s.State
}

func (a *app) printSessionLine(s grove.Session) error {
	line := fmt.Sprintf("%s %s", s.ID, s.State)
	if s.Port != 0 {
		line += fmt.Sprintf(" port %d", s.Port)
	}
	_, err := fmt.Fprintln(a.stdout, line)
	return err
}

// serviceStopped reports whether a session's newest service run (if
// any) has ended: a stop has finished killing its tree.
func (a *app) serviceStopped(ctx context.Context, key string) bool {
	stopped := true
	_ = a.st.Read(ctx, func(tx *storeTxCLI) error {
		if r, err := tx.ServiceRun(ctx, key); err == nil && r.EndedAt == nil {
			stopped = false
		}
		return nil
	})
	return stopped
}

// sessionEventCount is how many events a session has (0 if none or
// unknown): a start waits for events after it.
func (a *app) sessionEventCount(ctx context.Context, key string) int {
	evs, _ := a.st.SessionEvents(ctx, key)
	return len(evs)
}

// startOutcomes are the events that end a start or resume.
var startOutcomes = []string{"session_" + grove.SessionLive, "session_" + grove.SessionFailed, "service_exited", "session_" + grove.SessionDead}

// waitStarted waits (while a daemon runs) until the start or resume asked
// after the session's first `before` events has an outcome: live prints
// the session line; dead or failed is an error (exit 1) with the reason.
func (a *app) waitStarted(ctx context.Context, key, what string, before int) error {
	var outcome grove.Event
	_, ok, err := a.settleSession(ctx, key, what, func(s grove.Session, _ bool) bool {
		evs, _ := a.st.SessionEvents(ctx, key)
		for _, e := range evs[min(before, len(evs)):] {
			if slices.Contains(startOutcomes, e.Kind) {
				outcome = e
				return true
			}
		}
		return s.State == grove.SessionClosed
	})
	if err != nil || !ok {
		return err
	}
	s, err := a.st.Session(ctx, key) // as of the outcome
	if err != nil {
		return err
	}
	if outcome.Kind == "session_"+grove.SessionLive {
		return a.printSessionLine(s)
	}
	msg, hint, _ := strings.Cut(strings.TrimPrefix(outcome.Message, what+": "), "; hint: ")
	if hint == "" {
		hint = "see grove session show " + key + "; fix the service, then grove session resume " + key
	}
	state := s.State
	if outcome.Kind == "service_exited" || outcome.Kind == "session_dead" {
		state = grove.SessionDead
	} else if outcome.Kind == "session_"+grove.SessionFailed {
		state = grove.SessionFailed
	}
	return grove.Userf(nil, hint, "session %s %s: %s", key, state, msg)
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

// sessionView is what `grove session show --json` prints.
type sessionView struct {
	grove.Session
	Worktree string     `json:"worktree,omitempty"`
	Service  *grove.Run `json:"service_run,omitempty"`
	// ServiceSandbox is the policy the service's newest run applied.
	ServiceSandbox *supervise.Applied `json:"service_sandbox,omitempty"`
	Pending        []grove.FileChange `json:"pending"` // worktree vs the session's base
	// PendingError says why Pending could not be read ("" when it was).
	PendingError string        `json:"pending_error,omitempty"`
	Events       []grove.Event `json:"events"`
}

// sessionPending reads the session's pending changes: its worktree as it
// is now (tracked and untracked files, not ignored; nothing is touched)
// against its base. It returns the tree read too.
func (a *app) sessionPending(ctx context.Context, s grove.Session) (ws grove.Workspace, tree string, files []grove.FileChange, err error) {
	err = a.st.Read(ctx, func(tx *storeTxCLI) error {
		var err error
		ws, err = tx.SessionWorkspace(ctx, s.ID)
		return err
	})
	if err != nil {
		return ws, "", nil, err
	}
	repo, err := a.openRepo(ctx, s.RepoPath)
	if err != nil {
		return ws, "", nil, err
	}
	st, err := repo.StateOf(ctx, ws.Path, "")
	if err != nil {
		return ws, "", nil, err
	}
	files, err = repo.DiffStat(ctx, s.BaseCommit, st.Tree)
	return ws, st.Tree, files, err
}

func (a *app) sessionShowCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "show KEY [--json]",
		Short: "Show a session: state and why, port, service run, activity, pending changes, events",
		Long: `show prints a session's state (and, when dead or failed, why), its port, its
service's newest run (supervisor pid, exit code), its last activity, and its
pending changes: what its worktree holds that its base does not (changes
made between tasks, and tasks not applied). Changes made outside tasks are
never part of a task's diff; a task that started on some names them in a
session_pending event.`,
		Example: "  grove session show chat-42\n  grove session show --json chat-42",
		Args:    exactArgs(1, "a session key"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			if err := a.open(ctx); err != nil {
				return err
			}
			s, err := a.st.Session(ctx, args[0])
			if err != nil {
				return err
			}
			v := sessionView{Session: s, Pending: []grove.FileChange{}}
			if s.State != grove.SessionClosed {
				ws, _, files, err := a.sessionPending(ctx, s)
				v.Worktree = ws.Path
				if err != nil {
					v.PendingError = err.Error()
				} else if files != nil {
					v.Pending = files
				}
			}
			_ = a.st.Read(ctx, func(tx *storeTxCLI) error {
				if r, err := tx.ServiceRun(ctx, s.ID); err == nil {
					v.Service = &r
					if ap, ok, err := supervise.ReadApplied(r.Dir); err == nil && ok {
						v.ServiceSandbox = &ap
					}
				}
				return nil
			})
			if v.Events, err = a.st.SessionEvents(ctx, s.ID); err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(v)
			}
			return a.printSessionView(v)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) printSessionView(v sessionView) error {
	w := a.stdout
	fmt.Fprintf(w, "session   %s\nstate     %s\n", v.ID, sessionStateText(v.Session))
	if v.Reason != "" {
		fmt.Fprintf(w, "reason    %s\n", v.Reason)
	}
	fmt.Fprintf(w, "repo      %s (target %s)\n", v.RepoPath, v.TargetBranch)
	if v.Worktree != "" {
		fmt.Fprintf(w, "worktree  %s\n", v.Worktree)
	}
	base := fmt.Sprintf("%.12s", v.BaseCommit)
	if v.BaseHeld != "" {
		base += fmt.Sprintf(" (held: changes made outside tasks were committed in %.12s; apply them yourself or close with --force)", v.BaseHeld)
	}
	fmt.Fprintf(w, "base      %s\n", base)
	if len(v.Serve) > 0 {
		fmt.Fprintf(w, "service   %s (restart %s, %d/%d restarts)\n", strings.Join(v.Serve, " "), v.Restart, v.Restarts, v.MaxRestarts)
		port := "-"
		if v.Port != 0 {
			port = fmt.Sprint(v.Port)
		} else if v.LastPort != 0 {
			port = fmt.Sprintf("- (lease expired; had %d)", v.LastPort)
		}
		fmt.Fprintf(w, "port      %s\n", port)
	}
	if r := v.Service; r != nil {
		run := fmt.Sprintf("#%d supervisor pid %d, started %s ago", r.Attempt, r.Pid, age(time.Since(r.StartedAt)))
		if r.ExitCode != nil {
			run += fmt.Sprintf(", exited with code %d (%s)", *r.ExitCode, r.Reason)
		}
		fmt.Fprintf(w, "run       %s (log %s/log)\n", run, r.Dir)
		fmt.Fprintf(w, "sandbox   %s\n", serviceSandboxLine(v.ServiceSandbox))
	}
	fmt.Fprintf(w, "activity  %s, %s ago\n", orDash(v.Activity), age(time.Since(v.LastUsedAt)))
	switch {
	case v.PendingError != "":
		fmt.Fprintf(w, "pending   unknown: %s\n", v.PendingError)
	case len(v.Pending) == 0:
		fmt.Fprintf(w, "pending   none\n")
	default:
		fmt.Fprintf(w, "pending   %d file(s) not on the base (grove session diff %s):\n", len(v.Pending), v.ID)
		for _, f := range v.Pending {
			fmt.Fprintf(w, "  %s %s\n", f.Status, f.Path)
		}
	}
	fmt.Fprintln(w, "events")
	for _, e := range v.Events[max(0, len(v.Events)-15):] {
		fmt.Fprintf(w, "  %s  %-16s %s\n", e.At.Local().Format("15:04:05"), e.Kind, e.Message)
	}
	return nil
}

// serviceSandboxLine says how the service's run was confined.
func serviceSandboxLine(ap *supervise.Applied) string {
	switch {
	case ap == nil:
		return "not recorded (a run by an older grove ran unconfined)"
	case ap.Mode == supervise.SandboxOff:
		return "off: the service ran unconfined (grove serve --sandbox off)"
	case !ap.Landlock:
		return fmt.Sprintf("%s, NOT enforced: the service ran unconfined (kernel Landlock ABI %d)", ap.Mode, ap.ABI)
	}
	return fmt.Sprintf("on (Landlock ABI %d, %s): it may write %s", ap.ABI, ap.Mode, strings.Join(ap.Write, ", "))
}

func (a *app) sessionDiffCmd() *cobra.Command {
	var stat bool
	c := &cobra.Command{
		Use:   "diff KEY [--stat]",
		Short: "Print a session's pending changes: its worktree against its base (binary-safe patch)",
		Long: `diff prints what the session's worktree holds that its base does not:
changes made between tasks (by a person, by the service) and tasks not yet
applied. Nothing is touched: the worktree is read through a temporary
index.`,
		Example: "  grove session diff chat-42\n  grove session diff --stat chat-42",
		Args:    exactArgs(1, "a session key"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			if err := a.open(ctx); err != nil {
				return err
			}
			s, err := a.st.Session(ctx, args[0])
			if err != nil {
				return err
			}
			if s.State == grove.SessionClosed {
				return grove.Userf(grove.ErrConflict, "grove restore works on its snapshot", "session %s is closed", s.ID)
			}
			_, tree, files, err := a.sessionPending(ctx, s)
			if err != nil {
				return err
			}
			if stat {
				for _, f := range files {
					fmt.Fprintf(a.stdout, "%s\t+%d -%d\t%s\n", f.Status, max(f.Added, 0), max(f.Deleted, 0), f.Path)
				}
				fmt.Fprintf(a.stdout, "%d files pending\n", len(files))
				return nil
			}
			repo, err := a.openRepo(ctx, s.RepoPath)
			if err != nil {
				return err
			}
			patch, err := repo.Diff(ctx, s.BaseCommit, tree)
			if err != nil {
				return err
			}
			_, err = a.stdout.Write(patch)
			return err
		},
	}
	c.Flags().BoolVar(&stat, "stat", false, "one line per file")
	return c
}
