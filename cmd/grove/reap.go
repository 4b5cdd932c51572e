package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs"
)

func (a *app) reapCmd() *cobra.Command {
	var (
		dryRun bool
		asJSON bool
		grace  time.Duration
	)
	c := &cobra.Command{
		Use:   "reap",
		Short: "Remove worktrees whose task is finished, through the at-risk gate",
		Long: `reap runs one reaper pass now, in this process (no daemon needed; it takes
the same per-repository locks). It looks at grove's worktrees whose task is
finished (failed, canceled, applied, closed, discarded, conflict; not review)
or whose session is closed, and at worktrees under $GROVE_HOME/worktrees
grove has no record of, idle for longer than --grace. A worktree the at-risk
gate calls safe is
removed; one holding work is kept and its reasons recorded (grove ls
--at-risk); a directory deleted by hand has git's record of that worktree
alone forgotten (never a repository-wide git worktree prune: a worktree of
yours on a disk that is not mounted keeps its record). A directory that is
no worktree of a known repository is never deleted. A worktree another
process is removing (a close) is skipped; one whose removal a crash cut
short is finished first. A task whose close was refused is looked at again
whatever its age, and closed once nothing is at risk (a process exited).
Every removal goes through the same path as grove close.
grove serve runs the same pass every --reap-every.`,
		Example: `  grove reap --dry-run          # what it would do
  grove reap
  grove reap --grace 0 --json   # no grace, machine-readable report`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if grace < 0 {
				return grove.Userf(grove.ErrUsage, "give a duration like 1h, or 0 for none", "negative --grace %s", grace)
			}
			ctx := c.Context()
			if err := a.open(ctx); err != nil {
				return err
			}
			deps, err := jobs.NewDeps(a.st, a.home, nil)
			if err != nil {
				return err
			}
			rep, err := jobs.Reap(ctx, deps, time.Now(), grace, dryRun)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(rep)
			}
			return a.printReap(rep)
		},
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be done; change nothing")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	c.Flags().DurationVar(&grace, "grace", jobs.DefaultReapGrace, "leave worktrees idle for less than this alone")
	return c
}

func (a *app) printReap(rep jobs.ReapReport) error {
	if len(rep.Items) > 0 {
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ACTION\tTASK\tOWNER\tIDLE\tPATH\tREASONS")
		for _, it := range rep.Items {
			task := it.TaskID
			if task == "" {
				task = "-"
				if it.SessionID != "" {
					task = "session " + it.SessionID
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", it.Action, task, it.Owner,
				age(time.Duration(it.IdleSeconds)*time.Second), it.Path, riskText(it.Reasons))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	verb := map[bool]string{true: "would remove", false: "removed"}[rep.DryRun]
	prune := map[bool]string{true: "would prune", false: "pruned"}[rep.DryRun]
	fmt.Fprintf(a.stdout, "%s %d, %s %d, kept %d, too young %d, being removed %d (grace %s)",
		verb, rep.Count(jobs.ReapRemoved)+rep.Count(jobs.ReapWouldRemove),
		prune, rep.Count(jobs.ReapPruned)+rep.Count(jobs.ReapWouldPrune),
		rep.Count(jobs.ReapKept), rep.Count(jobs.ReapSkippedYoung), rep.Count(jobs.ReapSkippedBusy), rep.Grace)
	if rep.DryRun {
		fmt.Fprint(a.stdout, "; dry run, nothing changed")
	}
	fmt.Fprintln(a.stdout)
	return nil
}

// riskText is "reason (detail); reason" for a table cell.
func riskText(risks []gitops.Risk) string {
	s := make([]string, 0, len(risks))
	for _, r := range risks {
		if r.Detail != "" {
			s = append(s, r.Reason+" ("+r.Detail+")")
		} else {
			s = append(s, r.Reason)
		}
	}
	return strings.Join(s, "; ")
}
