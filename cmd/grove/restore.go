package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove/jobs"
)

func (a *app) restoreCmd() *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "restore ID",
		Short: "Recreate a task's worktree from the snapshot grove close --force took",
		Long: `restore brings back the worktree of a task closed with --force, from its
snapshot (refs/grove/snapshots/ID): the same files byte for byte, the same
index (staged changes, conflicts, assume-unchanged and skip-worktree flags),
so git status reads the same. It goes back where it was (or --path DIR) on
branch grove/ID/work (grove/ID/work-restored if that exists). Works without a daemon.`,
		Example: `  grove restore t1a2b3c4d
  grove restore t1a2 --path ~/src/rescued`,
		Args: exactArgs(1, "a task id"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			id, err := a.openTask(ctx, args[0])
			if err != nil {
				return err
			}
			deps, err := jobs.NewDeps(a.st, a.home, nil)
			if err != nil {
				return err
			}
			ws, err := jobs.Restore(ctx, deps, id, path)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s restored at %s (branch %s, from %s)\n", id, ws.Path, ws.Branch, ws.SnapshotRef)
			return nil
		},
	}
	c.Flags().StringVar(&path, "path", "", "restore here instead of the original place")
	return c
}
