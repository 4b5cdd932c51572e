package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove/jobs"
)

func (a *app) restoreCmd() *cobra.Command {
	var path string
	var from fromBackup
	c := &cobra.Command{
		Use:   "restore ID [--from REMOTE|DIR]",
		Short: "Recreate a task's worktree from the snapshot grove close --force took",
		Long: `restore brings back the worktree of a task closed with --force, from its
snapshot (refs/grove/snapshots/ID): the same files byte for byte, the same
index (staged changes, conflicts, assume-unchanged and skip-worktree flags),
so git status reads the same. It goes back where it was (or --path DIR) on
branch grove/ID/work (grove/ID/work-restored if that exists). Works without a daemon.

With --from it restores from a backup (grove backup) instead, on any box:
run it in a clone of the repository (or pass --repo); see --from.`,
		Example: `  grove restore t1a2b3c4d
  grove restore t1a2 --path ~/src/rescued
  grove restore --from /mnt/nas/grove.git t1a2b3c4d --repo ~/src/app`,
		Args: exactArgs(1, "a task id"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			if from.source != "" {
				return a.restoreFromBackup(ctx, from, args[0], path)
			}
			id, err := a.openLocalTask(ctx, args[0], "restore")
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
	from.flags(c)
	return c
}
