package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

func (a *app) lsCmd() *cobra.Command {
	var (
		states []string
		repo   string
		limit  int
		asJSON bool
		atRisk bool
		host   string
	)
	c := &cobra.Command{
		Use:   "ls",
		Short: "List tasks, newest first",
		Example: `  grove ls
  grove ls --state running --state review
  grove ls --repo . --json
  grove ls --at-risk        # worktrees kept because they hold work, with the reasons`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			if err := a.open(ctx); err != nil {
				return err
			}
			// The table shows the newest 100 unless told otherwise; --json
			// gives every task unless --limit is set.
			if limit < 0 {
				limit = 0
				if !asJSON {
					limit = tableLimit
				}
			}
			f := store.TaskFilter{Limit: limit, Host: host}
			for _, s := range states {
				for _, s := range strings.Split(s, ",") {
					st := grove.TaskState(s)
					if !st.Valid() {
						return grove.Userf(grove.ErrUsage, fmt.Sprintf("states are: %v", grove.AllStates), "unknown state %q", s)
					}
					f.States = append(f.States, st)
				}
			}
			if repo != "" {
				r, err := gitops.Open(ctx, repo)
				if err != nil {
					return err
				}
				row, err := a.st.RepoByPath(ctx, r.Root)
				if errors.Is(err, grove.ErrNotFound) {
					if atRisk {
						return a.printAtRisk(ctx, -1, asJSON)
					}
					return a.printTasks(nil, asJSON)
				}
				if err != nil {
					return err
				}
				f.RepoID = row.ID
			}
			if atRisk {
				return a.printAtRisk(ctx, f.RepoID, asJSON)
			}
			tasks, err := a.st.ListTasks(ctx, f)
			if err != nil {
				return err
			}
			if err := a.printTasks(tasks, asJSON); err != nil {
				return err
			}
			if !asJSON && f.Limit > 0 && len(tasks) == f.Limit {
				fmt.Fprintf(a.stderr, "showing the newest %d tasks; --limit 0 shows all\n", f.Limit)
			}
			return nil
		},
	}
	c.Flags().StringArrayVar(&states, "state", nil, "only tasks in this state (repeatable, or comma-separated)")
	c.Flags().StringVar(&repo, "repo", "", "only tasks of this repository")
	c.Flags().StringVar(&host, "host", "", "only tasks of repositories on this host (a shared --database)")
	c.Flags().IntVar(&limit, "limit", -1, "at most this many tasks (0: all; default 100 in the table, all with --json)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().BoolVar(&atRisk, "at-risk", false, "list worktrees kept because they hold work (refused close or reap), with the reasons")
	return c
}

// tableLimit is how many tasks the `grove ls` table shows by default.
const tableLimit = 100

func (a *app) printTasks(tasks []grove.Task, asJSON bool) error {
	if asJSON {
		outs, err := a.taskOuts(context.Background(), tasks)
		if err != nil {
			return err
		}
		return a.printJSON(outs)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	pt := newPainter(a.stdout)
	hosts := a.st.Postgres() // several hosts may share the database: say whose
	if hosts {
		fmt.Fprintf(tw, "ID\t%s\tAGE\tEXIT\tHOST\tREPO\tCOMMAND\n", pt.paint(colorDefault, "STATE"))
	} else {
		fmt.Fprintf(tw, "ID\t%s\tAGE\tEXIT\tREPO\tCOMMAND\n", pt.paint(colorDefault, "STATE"))
	}
	now := time.Now()
	for _, t := range tasks {
		exit := "-"
		if t.ExitCode != nil {
			exit = fmt.Sprint(*t.ExitCode)
		}
		repo := shortPath(t.RepoPath)
		if hosts {
			repo = t.Host + "\t" + repo
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, pt.waitingState(t.State, a.stateLabel(t) != string(t.State)), age(now.Sub(t.CreatedAt)), exit,
			repo, clip(shellQuote(t.Argv), 50))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if n, err := a.st.CountPool(context.Background()); err == nil && n > 0 {
		up, _ := a.st.CountPoolSetUp(context.Background())
		fmt.Fprintf(a.stdout, "warm pool: %d ready worktree(s), %d set up, %d not\n", n, up, n-up)
	}
	return nil
}

func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func shortPath(p string) string {
	if h, err := os.UserHomeDir(); err == nil && h != "/" && strings.HasPrefix(p, h+"/") {
		return "~" + p[len(h):]
	}
	return p
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// taskView is what `grove show` prints.
type taskView struct {
	taskOut
	Workspace *grove.Workspace `json:"workspace,omitempty"`
	AtRisk    any              `json:"at_risk,omitempty"`
	Run       *grove.Run       `json:"run,omitempty"`
	Change    *grove.Change    `json:"change,omitempty"`
	// Sandbox is the policy the latest run enforced (sandbox_show.go).
	Sandbox *supervise.Applied `json:"sandbox,omitempty"`
	Events  []grove.Event      `json:"events"`
	// Waiting: the agent (on a terminal) waits for input.
	Waiting bool `json:"waiting,omitempty"`
}

func (a *app) showCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:     "show ID",
		Short:   "Show a task: state, worktree, run, change, events",
		Example: "  grove show t1a2b3c4d\n  grove show t1a2 --json",
		Args:    exactArgs(1, "a task id"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			if err := a.open(ctx); err != nil {
				return err
			}
			v, err := a.taskView(ctx, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(v)
			}
			return printView(a.stdout, v)
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) taskView(ctx context.Context, idArg string) (taskView, error) {
	id, err := a.resolve(ctx, idArg)
	if err != nil {
		return taskView{}, err
	}
	t, err := a.st.Task(ctx, id)
	if err != nil {
		return taskView{}, err
	}
	out, err := a.taskOutOf(ctx, t)
	if err != nil {
		return taskView{}, err
	}
	v := taskView{taskOut: out}
	v.Waiting = a.stateLabel(t) != string(t.State)
	if ws, err := a.st.TaskWorkspace(ctx, id); err == nil {
		v.Workspace = &ws
		if ws.AtRisk != "" {
			v.AtRisk = jsonRaw(ws.AtRisk)
		}
	} else if !errors.Is(err, grove.ErrNotFound) {
		return v, err
	}
	if r, err := a.st.LatestAgentRun(ctx, id); err == nil {
		v.Run = &r
		loadSandbox(&v)
	} else if !errors.Is(err, grove.ErrNotFound) {
		return v, err
	}
	if ch, err := a.st.Change(ctx, id); err == nil {
		v.Change = &ch
	} else if !errors.Is(err, grove.ErrNotFound) {
		return v, err
	}
	v.Events, err = a.st.Events(ctx, id, 0)
	if v.Events == nil {
		v.Events = []grove.Event{}
	}
	return v, err
}

func printView(w io.Writer, v taskView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(k, val string) { fmt.Fprintf(tw, "%s\t%s\n", k, val) }
	p("task", v.ID)
	p("state", newPainter(w).waitingState(v.State, v.Waiting))
	if v.Error != "" {
		p("error", oneLine(v.Error))
	}
	if v.ExitCode != nil {
		p("exit code", fmt.Sprint(*v.ExitCode))
	}
	if v.Host != "" {
		p("host", v.Host)
	}
	p("repo", v.RepoPath)
	p("base", fmt.Sprintf("%s (%.12s)", v.BaseRef, v.BaseCommit))
	p("target", v.TargetBranch)
	p("command", shellQuote(v.Argv))
	p("apply", string(v.Apply))
	p("attempt", fmt.Sprint(v.Attempt))
	p("created", v.CreatedAt.Format(time.RFC3339))
	if v.Workspace != nil {
		p("worktree", fmt.Sprintf("%s (%s, branch %s)", v.Workspace.Path, v.Workspace.State, v.Workspace.Branch))
		if v.Workspace.SnapshotRef != "" {
			p("snapshot", v.Workspace.SnapshotRef)
		}
		if v.Workspace.AtRisk != "" {
			p("at risk", v.Workspace.AtRisk)
		}
	}
	if v.AppliedCommit != "" {
		p("applied as", v.AppliedCommit)
	}
	if v.Run != nil {
		p("log", v.Run.Dir+"/"+supervise.LogFile)
	}
	if v.Options.TTY {
		p("terminal", "grove attach "+v.ID+" (Ctrl-] detaches), grove send "+v.ID+" TEXT --enter")
	}
	sandboxLines(v, p)
	if v.Change != nil {
		p("change", fmt.Sprintf("%d files, +%d -%d (%.12s..%.12s)", len(v.Change.Files), v.Change.Added,
			v.Change.Deleted, v.Change.BaseCommit, v.Change.HeadCommit))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "events:")
	for _, e := range v.Events {
		fmt.Fprintf(w, "  %s  %-14s %s\n", e.At.Format(time.TimeOnly), e.Kind, oneLine(e.Message))
	}
	return nil
}
