package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs"
)

// printSetupLog prints the setup output of a task's current attempt.
func (a *app) printSetupLog(ctx context.Context, id string) error {
	t, err := a.st.Task(ctx, id)
	if err != nil {
		return err
	}
	out, ok, err := jobs.SetupLog(a.home, id, t.Attempt)
	if err != nil {
		return err
	}
	if !ok {
		return grove.Userf(grove.ErrNotFound, "see its events: grove logs --events "+id,
			"task %s attempt %d ran no setup (nothing to prepare, a worktree already set up, or not there yet)", id, t.Attempt)
	}
	_, err = fmt.Fprint(a.stdout, out)
	return err
}

func (a *app) repoCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "repo",
		Short: "Show or override a repository's settings (.grove.toml)",
		Long: "A repository's settings live in .grove.toml at its root, committed, read at each task's base commit:\n" +
			"  setup = [\"npm ci\"]              shell lines run with sh -c, in order, in each new worktree\n" +
			"  copy = [\".env\", \"config/*.local.*\"]  ignored files copied from the main checkout\n" +
			"  setup_inputs = [\"package-lock.json\"]  files whose change means setup must run again\n" +
			"  setup_timeout = \"10m\"           bound of each setup command\n" +
			"  keep_ignored = [\"node_modules\"]  ignored paths the at-risk gate may delete without a snapshot\n" +
			"Each can be overridden on this box (git config --local grove.<key> without underscores).\n" +
			"One key is set only on this box, never in .grove.toml (an agent could commit it):\n" +
			"  allow_write                     absolute paths every sandboxed agent of the repository may write\n" +
			"                                  (grove repo set allow_write /srv/cache /home/me/.tool)",
	}
	c.AddCommand(a.repoShowCmd(), a.repoSetCmd(), a.repoUnsetCmd())
	return c
}

func (a *app) repoShowCmd() *cobra.Command {
	var (
		repoDir, base string
		asJSON        bool
	)
	c := &cobra.Command{
		Use:     "show",
		Short:   "Print the effective settings and where each comes from",
		Example: "  grove repo show\n  grove repo show --base origin/main --json",
		Args:    exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			repo, err := gitops.Open(ctx, repoDir)
			if err != nil {
				return err
			}
			commit, err := repo.ResolveCommit(ctx, base)
			if err != nil {
				return err
			}
			s, key, err := repo.SettingsAt(ctx, commit)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					Repo     string         `json:"repo"`
					Commit   string         `json:"commit"`
					Settings grove.Settings `json:"settings"`
					SetupKey string         `json:"setup_key"`
				}{repo.Root, commit, s, key})
			}
			fmt.Fprintf(a.stdout, "repository %s at %.12s\n", repo.Root, commit)
			for _, k := range grove.SettingKeys {
				vals := s.Values(k)
				shown := "(none)"
				if k == grove.KeyKeepIgnored && s.KeepIgnored == nil {
					shown = "(the gate's default: " + strings.Join(gitops.DefaultKeepIgnored, " ") + ")"
				} else if len(vals) > 0 {
					q := make([]string, len(vals))
					for i, v := range vals {
						q[i] = fmt.Sprintf("%q", v)
					}
					shown = strings.Join(q, ", ")
				}
				fmt.Fprintf(a.stdout, "%-14s %s\n%-14s   from %s\n", k, shown, "", s.Sources[k])
			}
			return nil
		},
	}
	c.Flags().StringVar(&repoDir, "repo", ".", "the repository (any directory inside it)")
	c.Flags().StringVar(&base, "base", "HEAD", "read .grove.toml at this commit")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) repoSetCmd() *cobra.Command {
	var repoDir string
	c := &cobra.Command{
		Use:   "set KEY [VALUE...]",
		Short: "Override a setting on this box (git config --local grove.KEY)",
		Example: "  grove repo set setup 'npm ci' 'make generate'\n  grove repo set copy .env '.env.*'\n" +
			"  grove repo set setup_timeout 20m\n  grove repo set keep_ignored    # an empty list",
		Args: minArgs(1, "a setting key"),
		RunE: func(c *cobra.Command, args []string) error {
			repo, err := gitops.Open(c.Context(), repoDir)
			if err != nil {
				return err
			}
			return repo.SetSetting(c.Context(), args[0], args[1:])
		},
	}
	c.Flags().StringVar(&repoDir, "repo", ".", "the repository (any directory inside it)")
	return c
}

func (a *app) repoUnsetCmd() *cobra.Command {
	var repoDir string
	c := &cobra.Command{
		Use:     "unset KEY",
		Short:   "Drop this box's override of a setting (.grove.toml applies again)",
		Example: "  grove repo unset setup",
		Args:    exactArgs(1, "a setting key"),
		RunE: func(c *cobra.Command, args []string) error {
			repo, err := gitops.Open(c.Context(), repoDir)
			if err != nil {
				return err
			}
			return repo.UnsetSetting(c.Context(), args[0])
		},
	}
	c.Flags().StringVar(&repoDir, "repo", ".", "the repository (any directory inside it)")
	return c
}

// minArgs is cobra.MinimumNArgs with a usage error that exits 2.
func minArgs(n int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) < n {
			return grove.Userf(grove.ErrUsage, "usage: "+c.UseLine(), "%s needs %s", c.Name(), what)
		}
		return nil
	}
}
