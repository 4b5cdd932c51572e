package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/riverqueue/river"
	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/scheduler"
)

func (a *app) backupCmd() *cobra.Command {
	var (
		opt    jobs.BackupOptions
		asJSON bool
		upload string
	)
	c := &cobra.Command{
		Use:   "backup --to REMOTE | --bundle DIR",
		Short: "Push snapshots, kept changes and at-risk worktrees off this box",
		Long: `backup copies the work grove keeps on this disk to another place, as git:
every registered repository's refs/grove/* (snapshots of closed worktrees,
kept changes, trash tips) and a fresh snapshot of each worktree the at-risk
gate keeps (uncommitted, untracked, not-reproducible ignored files, nested
repositories; the worktree is not touched) are pushed to REMOTE (any git
URL or path you can push to) under refs/grove-backup/BOX/REPO-KEY/. Only
new or moved refs are sent, with the objects the remote lacks; nothing
outside that namespace is touched, and a ref deleted here stays there.
With --bundle DIR it writes the same refs as incremental git bundle files
instead, plus DIR/manifest.json (each bundle's refs, prerequisites, size
and SHA-256), for object stores; --upload runs a command on each new file.
grove restore --from REMOTE|DIR ID brings a task back on any box. grove serve
--backup-every runs it on a schedule; grove doctor shows the last good one.`,
		Example: `  grove backup --to /mnt/nas/grove.git
  grove backup --to ssh://backup.example.com/srv/grove.git --dry-run
  grove backup --to git@host:grove.git --json
  grove backup --bundle /var/backups/grove --upload 'rclone copy {} s3:grove/'`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			opt.Upload = strings.Fields(upload)
			ctx := c.Context()
			if err := a.open(ctx); err != nil {
				return err
			}
			deps, err := jobs.NewDeps(a.st, a.home, nil)
			if err != nil {
				return err
			}
			rep, err := jobs.Backup(ctx, deps, opt)
			if err != nil {
				return err
			}
			if asJSON {
				if err := a.printJSON(rep); err != nil {
					return err
				}
			} else if err := a.printBackup(rep); err != nil {
				return err
			}
			return rep.Err()
		},
	}
	c.Flags().StringVar(&opt.Remote, "to", "", "git URL or path of the repository to push to")
	c.Flags().StringVar(&opt.Bundle, "bundle", "", "write incremental bundles and a manifest into this directory instead of pushing")
	c.Flags().StringVar(&upload, "upload", "", "with --bundle: a command run on each new file (split at spaces, no shell; {} is the file, else it is appended)")
	c.Flags().BoolVar(&opt.DryRun, "dry-run", false, "say what would be sent and how much; send nothing")
	c.Flags().StringVar(&opt.Box, "box", "", "this machine's name in the backup (default $GROVE_BOX or the host name)")
	c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return c
}

// printBackup prints a backup report, a line per repository and per
// at-risk worktree.
func (a *app) printBackup(rep jobs.BackupReport) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	verb := "sent"
	if rep.DryRun {
		verb = "would send"
	}
	for _, r := range rep.Repos {
		switch {
		case r.Error != "":
			fmt.Fprintf(tw, "%s\tFAILED\t%s\n", r.Repo, r.Error)
		case r.Plan != nil:
			fmt.Fprintf(tw, "%s\t%s %d refs (%s)\t%d up to date, %d kept there only\n", r.Repo, verb, len(r.Plan.Refs),
				humanBytes(uint64(r.Plan.Bytes)), r.Plan.Unchanged, r.Plan.KeptRemote)
		}
		for _, l := range r.Live {
			if l.Error != "" {
				fmt.Fprintf(tw, "  %s\tNOT SNAPSHOTTED\t%s\n", l.Path, l.Error)
			} else {
				fmt.Fprintf(tw, "  %s\tsnapshot %s\tat risk: %s\n", l.Path, l.ID, strings.Join(l.Reasons, ", "))
			}
		}
	}
	if rep.UploadError != "" {
		fmt.Fprintf(tw, "upload\tFAILED\t%s\n", rep.UploadError)
	}
	fmt.Fprintf(tw, "%s %d refs (%s) to %s as box %s in %d ms\n", verb, rep.Refs, humanBytes(uint64(rep.Bytes)), rep.Remote, rep.Box, rep.TookMS)
	return tw.Flush()
}

// fromBackup are grove restore's flags for restoring from a backup.
type fromBackup struct {
	source string // --from
	repo   string // --repo
	box    string // --box
}

func (f *fromBackup) flags(c *cobra.Command) {
	c.Flags().StringVar(&f.source, "from", "", "restore from a backup (grove backup --to REMOTE): its git URL or path; ID need not be known here")
	c.Flags().StringVar(&f.repo, "repo", ".", "with --from: any path inside a clone of the backed-up repository")
	c.Flags().StringVar(&f.box, "box", "", "with --from: the box whose backup to use, when several hold ID")
}

// restoreFromBackup is grove restore --from.
func (a *app) restoreFromBackup(ctx context.Context, f fromBackup, id, path string) error {
	if err := a.open(ctx); err != nil {
		return err
	}
	deps, err := jobs.NewDeps(a.st, a.home, nil)
	if err != nil {
		return err
	}
	r, err := jobs.RestoreFromBackup(ctx, deps, f.repo, f.source, id, f.box, path)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "%s restored at %s (branch %s, %s from %s)\n", r.ID, r.Path, r.Branch, r.From.Kind, r.From.Name)
	for _, n := range r.Notes {
		fmt.Fprintf(a.stdout, "  note: %s\n", n)
	}
	return nil
}

// backupSchedule is grove serve's scheduled backup.
type backupSchedule struct {
	every string // a duration or a cron spec; applies with to
	to    string // the remote; "" means no scheduled backup
	box   string
}

func (b *backupSchedule) flags(c *cobra.Command) {
	c.Flags().StringVar(&b.every, "backup-every", "1h",
		`with --backup-to: how often to back up (a duration, a cron spec like "@hourly", or "off")`)
	c.Flags().StringVar(&b.to, "backup-to", "", "back up to this git URL or path on a schedule (see grove backup; grove doctor shows the last one)")
	c.Flags().StringVar(&b.box, "backup-box", "", "this machine's name in the backup (default $GROVE_BOX or the host name)")
}

// record writes the schedule for doctor (jobs.BackupSchedule), or
// removes it without --backup-to; a failure is logged.
func (b backupSchedule) record(home string, log *slog.Logger) {
	var s *jobs.BackupSchedule
	if j, err := b.job(); err == nil && j.Spec != scheduler.Off {
		s = &jobs.BackupSchedule{Spec: j.Spec, Remote: j.Args().(jobs.BackupArgs).Remote, Since: time.Now().UTC()}
	}
	if err := jobs.WriteBackupSchedule(home, s); err != nil {
		log.Warn("backup schedule not recorded: doctor cannot tell an overdue backup", "err", err)
	}
}

// job is the periodic backup job (Spec off without --backup-to).
func (b backupSchedule) job() (scheduler.Job, error) {
	j := scheduler.Job{Name: "backup", Spec: scheduler.Off, Args: func() river.JobArgs { return jobs.BackupArgs{} }}
	if b.to == "" {
		return j, nil
	}
	every, err := scheduler.FlagSpec(b.every)
	if err != nil {
		return j, err
	}
	remote, err := gitops.NormalizeRemote(b.to)
	if err != nil {
		return j, err
	}
	if b.box != "" && gitops.SafeName(b.box) != b.box {
		return j, grove.Userf(grove.ErrUsage, "use letters, digits, '.', '_' and '-'", "bad --backup-box %q", b.box)
	}
	args := jobs.BackupArgs{Remote: remote, Box: b.box}
	j.Spec = every
	j.Args = func() river.JobArgs { return args }
	return j, nil
}

// backupProblem is the doctor line of home's backup state: status,
// message, hint.
func backupProblem(home string, now time.Time) (status, msg, hint string) {
	st, err := jobs.ReadBackupState(home)
	if err != nil {
		return checkProblem, err.Error(), "delete " + jobs.BackupStatePath(home) + "; the next backup writes it again"
	}
	good := "no backup has succeeded yet"
	if s := st.LastSuccess; s != nil {
		good = fmt.Sprintf("last good backup %s ago (%s, %d refs to %s)", age(now.Sub(s.At)), s.At.Local().Format(time.DateTime), s.Refs, s.Remote)
	}
	if r := st.LastRun; r != nil && !r.OK {
		return checkProblem, fmt.Sprintf("the last backup (%s ago, to %s) FAILED: %s; %s", age(now.Sub(r.At)), r.Remote, r.Error, good),
			"fix it and run grove backup --to " + r.Remote + "; until then the work grove keeps lives on this disk only"
	}
	sched, err := jobs.ReadBackupSchedule(home)
	if err != nil {
		return checkProblem, err.Error(), "delete " + jobs.BackupSchedulePath(home) + "; grove serve writes it again"
	}
	if sched != nil {
		base := sched.Since
		if st.LastSuccess != nil && st.LastSuccess.At.After(base) {
			base = st.LastSuccess.At
		}
		// Two scheduled runs (and a minute) went by without a good one.
		if s, err := scheduler.Parse(sched.Spec); err == nil && now.After(s.Next(s.Next(base)).Add(time.Minute)) {
			return checkProblem, fmt.Sprintf("the backup to %s is overdue (scheduled %s): %s", sched.Remote, sched.Spec, good),
				"is grove serve running? see its log, or run grove backup --to " + sched.Remote
		}
	}
	if st.LastRun == nil {
		return checkInfo, "no backup yet: the work grove keeps lives on this disk only",
			"grove backup --to REMOTE, or grove serve --backup-every 1h --backup-to REMOTE"
	}
	return checkOK, good, ""
}

// checkBackup is doctor's backup line.
func checkBackup(rep *doctorReport, home string) {
	status, msg, hint := backupProblem(home, time.Now())
	rep.add("backup", status, hint, "%s", msg)
}

// printBackupWarning says, under grove ls --at-risk, that the last backup
// failed: those worktrees then exist on this disk only.
func (a *app) printBackupWarning() error {
	status, msg, hint := backupProblem(a.home, time.Now())
	if status != checkProblem {
		return nil
	}
	_, err := fmt.Fprintf(a.stdout, "\nBACKUP: %s\n  hint: %s\n", msg, hint)
	return err
}
