package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/store"
)

func (a *app) trashCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "trash",
		Short: "List, restore or purge removed worktrees",
		Long: `Every removal (close, discard, the reaper, the pool, session close,
close --force) moves the worktree into $GROVE_HOME/trash instead of deleting
it: its files, git's record of it (index, HEAD, reflog, submodules' stores)
and its branch tip, with a manifest. grove serve keeps entries for
--trash-keep (24h) within --trash-max bytes (10 GiB), purging the oldest
first but never one younger than an hour for space (grove doctor reports
those). These commands work on the home directly; no daemon is needed.`,
		Example: `  grove trash ls
  grove trash restore 3f2a1c          # a task id, or an entry name from ls
  grove trash restore 3f2a1c --path /tmp/back
  grove trash purge 3f2a1c
  grove trash purge                   # empty it`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return grove.Userf(grove.ErrUsage, "see: grove trash --help", "grove trash needs a subcommand: ls, restore or purge")
		},
	}
	c.AddCommand(a.trashLsCmd(), a.trashRestoreCmd(), a.trashPurgeCmd())
	return c
}

// trashDir is $GROVE_HOME/trash.
func (a *app) trashDir() (string, error) {
	home, err := a.homeDir()
	if err != nil {
		return "", err
	}
	a.home = home
	return (&jobs.Deps{Home: home}).TrashDir(), nil
}

// trashItem is one entry as `grove trash ls --json` prints it.
type trashItem struct {
	Entry      string    `json:"entry"`
	AgeSeconds int64     `json:"age_seconds"`
	Size       int64     `json:"size"`
	Reason     string    `json:"reason,omitempty"`
	Task       string    `json:"task,omitempty"`
	Session    string    `json:"session,omitempty"`
	Path       string    `json:"path"`
	Repo       string    `json:"repo,omitempty"`
	Branch     string    `json:"branch,omitempty"`
	BranchTip  string    `json:"branch_tip,omitempty"`
	Head       string    `json:"head,omitempty"`
	Time       time.Time `json:"time"`
	Forced     bool      `json:"forced,omitempty"`
	Missing    bool      `json:"missing,omitempty"`
	Step       string    `json:"step,omitempty"`
	Problem    string    `json:"problem,omitempty"`
}

func itemOf(e gitops.TrashInfo) trashItem {
	m := e.Manifest
	return trashItem{Entry: e.Name(), AgeSeconds: int64(e.Age.Seconds()), Size: e.Size, Reason: m.Reason,
		Task: m.Task, Session: m.Session, Path: m.Path, Repo: m.Repo, Branch: m.Branch, BranchTip: m.BranchTip,
		Head: m.Head, Time: m.Time, Forced: m.Forced, Missing: m.Missing, Step: m.Step, Problem: e.Problem}
}

func (a *app) trashLsCmd() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "ls",
		Short: "List the trash's entries, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			dir, err := a.trashDir()
			if err != nil {
				return err
			}
			list, err := gitops.ListTrash(dir, time.Now())
			if err != nil {
				return err
			}
			items := []trashItem{}
			var total int64
			for _, e := range list {
				items = append(items, itemOf(e))
				total += e.Size
			}
			if asJSON {
				return a.printJSON(items)
			}
			if len(items) == 0 {
				fmt.Fprintln(a.stdout, "trash is empty")
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ENTRY\tAGE\tSIZE\tREASON\tOWNER\tPATH\tNOTE")
			for _, it := range items {
				owner := "-"
				switch {
				case it.Task != "":
					owner = "task " + it.Task
				case it.Session != "":
					owner = "session " + it.Session
				}
				reason := it.Reason
				if reason == "" {
					reason = "-"
				}
				if it.Forced {
					reason += " (forced)"
				}
				note := it.Problem
				if it.Missing && note == "" {
					note = "directory was already gone: git's record only"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", it.Entry, age(time.Duration(it.AgeSeconds)*time.Second),
					humanBytes(uint64(max(it.Size, 0))), reason, owner, it.Path, note)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%d entries, %s in %s\n", len(items), humanBytes(uint64(max(total, 0))), dir)
			return nil
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

func (a *app) trashRestoreCmd() *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "restore ENTRY",
		Short: "Put a removed worktree back, registered with git, as it was",
		Long: `restore moves the worktree of a trash entry (an entry name from grove trash
ls, or a task id: its newest entry) back to where it was, or to --path, and
registers it with git again: its files, index, HEAD, reflog, stashes,
submodules and nested repositories are exactly as they were. Its branch is
recreated at the recorded tip if it is gone; if the branch now points
elsewhere, or is checked out in another worktree, nothing is restored.
A worktree restored under $GROVE_HOME/worktrees is an unknown worktree to
the reaper: restore it with --path elsewhere to keep it out of its way.`,
		Example: `  grove trash restore 3f2a1c
  grove trash restore 20260101T120000-3f2a1c-0a1b2c3d --path ~/rescued`,
		Args: exactArgs(1, "ENTRY"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			dir, err := a.trashDir()
			if err != nil {
				return err
			}
			entry, err := gitops.FindTrashEntry(dir, args[0])
			if err != nil {
				return err
			}
			if path != "" {
				if path, err = filepath.Abs(path); err != nil {
					return grove.Userf(grove.ErrUsage, "give a directory path", "bad --path: %v", err)
				}
			}
			m, err := gitops.RestoreTrash(ctx, entry, path)
			if err != nil {
				return withHint(err, "grove trash ls shows the entry; its files are still in "+entry)
			}
			dest := m.RestorePath
			a.recordRestore(ctx, m, dest)
			fmt.Fprintf(a.stdout, "restored %s at %s", m.Entry, dest)
			if m.Branch != "" {
				fmt.Fprintf(a.stdout, " (branch %s at %s)", m.Branch, shortCommit(m.BranchTip))
			}
			fmt.Fprintln(a.stdout)
			return nil
		},
	}
	c.Flags().StringVar(&path, "path", "", "restore it at DIR instead of where it was")
	return c
}

// recordRestore adds an event to the entry's task, when there is a
// database and the task is in it (best effort: the restore is done).
func (a *app) recordRestore(ctx context.Context, m gitops.TrashManifest, dest string) {
	id := m.Task
	if id == "" && m.Session == "" { // a task's worktree is named by its id
		id = filepath.Base(m.Path)
	}
	if id == "" {
		return
	}
	if err := a.open(ctx); err != nil {
		return
	}
	if _, err := a.st.Task(ctx, id); err != nil {
		return
	}
	_ = a.st.InTx(ctx, func(tx *store.Tx) error {
		return tx.AddEvent(ctx, id, "", "trash_restored", "worktree restored from the trash at "+dest)
	})
}

func (a *app) trashPurgeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "purge [ENTRY]",
		Short: "Delete a trash entry now, or every entry",
		Long: `purge deletes the named entry (an entry name, or a task id: its newest
entry) for good, whatever its age: its files, git's record of it and the refs
that kept its commits. Without ENTRY it empties the trash, except entries an
operation is working on and entries it cannot read or that are marked kept
(name those to purge them).`,
		Example: `  grove trash purge 3f2a1c
  grove trash purge`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			dir, err := a.trashDir()
			if err != nil {
				return err
			}
			if len(args) == 1 {
				entry, err := gitops.FindTrashEntry(dir, args[0])
				if err != nil {
					return err
				}
				info, err := gitops.PurgeEntry(ctx, entry)
				if err != nil {
					return withHint(err, "grove trash ls shows the entry")
				}
				fmt.Fprintf(a.stdout, "purged %s (%s)\n", info.Name(), humanBytes(uint64(max(info.Size, 0))))
				return nil
			}
			rep, err := gitops.PurgeTrash(ctx, dir, time.Now(), time.Nanosecond, 0)
			var freed int64
			for _, p := range rep.Purged {
				freed += p.Size
			}
			fmt.Fprintf(a.stdout, "purged %d entries (%s)\n", len(rep.Purged), humanBytes(uint64(max(freed, 0))))
			for _, k := range rep.Kept {
				fmt.Fprintf(a.stdout, "kept %s: %s\n", k.Name(), k.Problem)
			}
			if err != nil {
				return withHint(err, "grove trash ls shows what is left")
			}
			return nil
		},
	}
	return c
}

// withHint gives err a hint line unless it has one.
func withHint(err error, hint string) error {
	if grove.HintOf(err) != "" {
		return err
	}
	var ue *grove.UserError
	if errors.As(err, &ue) {
		return err
	}
	return grove.Userf(err, hint, "%v", err)
}

func shortCommit(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// checkTrash is doctor's look at the trash: what it holds, and entries
// the default budget would purge but that are younger than an hour.
func checkTrash(rep *doctorReport, home string) {
	dir := (&jobs.Deps{Home: home}).TrashDir()
	young, bytes, err := jobs.TrashOverBudget(dir, time.Now(), jobs.DefaultTrashMax)
	switch {
	case err != nil:
		rep.add("trash", checkProblem, "check the permissions of "+dir, "cannot read the trash: %v", err)
	case len(young) > 0:
		rep.add("trash", checkProblem, "grove trash ls; grove trash purge ENTRY frees space by hand",
			"the trash holds %s, over its %s budget, and %d entries younger than an hour are kept anyway",
			humanBytes(uint64(bytes)), humanBytes(uint64(jobs.DefaultTrashMax)), len(young))
	default:
		rep.add("trash", checkOK, "", "the trash holds %s (%s)", humanBytes(uint64(max(bytes, 0))), dir)
	}
}

// applyTrash copies --trash-keep and --trash-max onto d.
func (o serveOptions) applyTrash(d *jobs.Deps) error {
	if o.trashKeep <= 0 {
		return grove.Userf(grove.ErrUsage, "give a duration like 24h", "--trash-keep must be positive")
	}
	n, err := parseBytes(o.trashMax)
	if err != nil {
		return grove.Userf(grove.ErrUsage, "write it like 10GiB, 500MB or 0 for no budget", "bad --trash-max %q: %v", o.trashMax, err)
	}
	if n == 0 {
		n = -1 // no budget
	}
	d.TrashKeep, d.TrashMax = o.trashKeep, n
	return nil
}

// parseBytes reads a byte count: a number with an optional unit (B, KB,
// MB, GB, TB powers of 1000; KiB, MiB, GiB, TiB powers of 1024; K, M, G, T
// as the binary ones).
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(c rune) bool { return (c < '0' || c > '9') && c != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, errors.New("not a byte count")
	}
	mult := map[string]float64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}[strings.ToUpper(unit)]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit %q", unit)
	}
	return int64(f * mult), nil
}
