package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
)

// reassignCmd is `grove reassign --from H1 --to H2`: queued tasks that
// have not started move from a host (down, or overloaded) to another host
// that has the same repository.
func (a *app) reassignCmd() *cobra.Command {
	var from, to string
	var asJSON bool
	c := &cobra.Command{
		Use:   "reassign --from HOST --to HOST",
		Short: "Move queued tasks that have not started to another host (shared --database)",
		Long: `reassign moves every queued task of repositories on --from that has not
started to the repository at the same path on --to, in one transaction.
A task that started, a session's task, or one whose repository --to does not
have stays, and the command says why.`,
		Example: "  grove reassign --from build-1 --to build-2",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return grove.Userf(grove.ErrUsage, "e.g. grove reassign --from build-1 --to build-2", "--from and --to are required")
			}
			ctx := c.Context()
			if err := a.open(ctx); err != nil {
				return err
			}
			out, err := jobs.Reassign(ctx, a.st, from, to)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(out)
			}
			moved := 0
			for _, r := range out {
				if r.Moved {
					moved++
					fmt.Fprintf(a.stdout, "%s\tmoved to %s (%s)\n", r.TaskID, to, r.Repo)
				} else {
					fmt.Fprintf(a.stdout, "%s\tstays on %s: %s\n", r.TaskID, from, r.Reason)
				}
			}
			fmt.Fprintf(a.stdout, "%d of %d queued task(s) moved from %s to %s\n", moved, len(out), from, to)
			return nil
		},
	}
	c.Flags().StringVar(&from, "from", "", "host whose queued tasks move")
	c.Flags().StringVar(&to, "to", "", "host they move to (it must have the same repository path)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}
