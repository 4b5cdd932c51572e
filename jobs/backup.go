package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// BackupOptions say where a backup goes.
type BackupOptions struct {
	// Remote is a git URL or path (gitops.NormalizeRemote) to push to.
	Remote string
	// Box names this machine in the remote's namespace (gitops.SafeName);
	// "" is BoxName().
	Box string
	// Bundle, instead of Remote, is a directory to write incremental
	// bundles and their manifest to (see BundleManifest).
	Bundle string
	// Upload is a command (argv, no shell; "{}" stands for the file, else
	// it is appended) run on each new bundle file, then on the manifest.
	Upload []string
	// DryRun says what would be sent and how much, and sends nothing
	// (live snapshots are still taken: objects only, no ref).
	DryRun bool
}

// BackupLive is a fresh snapshot of an at-risk worktree taken for a backup.
type BackupLive struct {
	ID      string   `json:"id"` // task id, session-<id>, or ws-<workspace id>
	Path    string   `json:"path"`
	Commit  string   `json:"commit,omitempty"`
	Reasons []string `json:"reasons,omitempty"` // the gate's reasons
	Error   string   `json:"error,omitempty"`   // the snapshot failed: this worktree is not in the backup
}

// BackupRepo is what a backup did with one repository.
type BackupRepo struct {
	Repo  string             `json:"repo"`
	Key   string             `json:"key"`
	Plan  *gitops.BackupPlan `json:"plan,omitempty"`
	Live  []BackupLive       `json:"live"`
	Error string             `json:"error,omitempty"`
}

// BackupReport is one backup run (or dry run) over every registered
// repository.
type BackupReport struct {
	At     time.Time    `json:"at"`
	Remote string       `json:"remote"`           // the remote, or the bundle directory
	Bundle bool         `json:"bundle,omitempty"` // Remote is a bundle directory
	Box    string       `json:"box"`
	DryRun bool         `json:"dry_run"`
	OK     bool         `json:"ok"` // every repository sent, every at-risk worktree snapshotted
	Repos  []BackupRepo `json:"repos"`
	Refs   int          `json:"refs"`    // refs sent (or to send)
	Bytes  int64        `json:"bytes"`   // their objects' size, estimated (gitops.BackupPlan)
	TookMS int64        `json:"took_ms"` // wall time
	// UploadError: --upload failed (the bundles stay; the next run retries).
	UploadError string `json:"upload_error,omitempty"`
}

// Err is nil when the run was OK, else one error naming what failed.
func (r BackupReport) Err() error {
	if r.OK {
		return nil
	}
	var parts []string
	for _, rp := range r.Repos {
		if rp.Error != "" {
			parts = append(parts, rp.Repo+": "+rp.Error)
		}
		for _, l := range rp.Live {
			if l.Error != "" {
				parts = append(parts, l.Path+": "+l.Error)
			}
		}
	}
	if r.UploadError != "" {
		parts = append(parts, r.UploadError)
	}
	if len(parts) == 0 {
		parts = []string{"failed"}
	}
	return grove.Userf(nil, "fix the first error and run grove backup again; grove doctor shows the last good backup",
		"backup to %s: %s", r.Remote, strings.Join(parts, "; "))
}

// BoxName is this machine's name in backup namespaces: $GROVE_BOX, else
// the host name, made a ref component (gitops.SafeName); "box" if neither
// gives one.
func BoxName() string {
	if b := gitops.SafeName(os.Getenv("GROVE_BOX")); b != "" {
		return b
	}
	h, _ := os.Hostname()
	if b := gitops.SafeName(h); b != "" {
		return b
	}
	return "box"
}

// Backup takes a fresh snapshot of every worktree the at-risk gate keeps
// and pushes each registered repository's refs/grove/* and those
// snapshots to opt.Remote under the namespace
// refs/grove-backup/<box>/<repo key>/ (see gitops.BackupRefsRoot). A
// repository or worktree that fails does not stop the others: the report
// names them and is not OK. A remote that is no repository or cannot be
// reached fails fast with a *grove.UserError. Unless DryRun, the result
// is recorded in $GROVE_HOME/backup/state.json (see BackupState) and as a
// "backup" or "backup_failed" event.
func Backup(ctx context.Context, d *Deps, opt BackupOptions) (BackupReport, error) {
	start := time.Now()
	rep := BackupReport{At: d.Now().UTC(), DryRun: opt.DryRun, Box: opt.Box, Repos: []BackupRepo{}}
	if rep.Box == "" {
		rep.Box = BoxName()
	} else if gitops.SafeName(rep.Box) != rep.Box {
		return rep, grove.Userf(grove.ErrUsage, "use letters, digits, '.', '_' and '-', e.g. --box laptop", "bad box name %q", rep.Box)
	}
	if (opt.Remote == "") == (opt.Bundle == "") {
		return rep, grove.Userf(grove.ErrUsage, "e.g. grove backup --to /mnt/nas/grove.git, or --bundle /mnt/nas/grove-bundles",
			"give one of --to REMOTE and --bundle DIR")
	}
	if len(opt.Upload) > 0 && opt.Bundle == "" {
		return rep, grove.Userf(grove.ErrUsage, "use --upload with --bundle DIR", "--upload needs --bundle")
	}
	repos, err := d.Store.Repos(ctx)
	if err != nil {
		return rep, err
	}
	wss, err := d.Store.LiveWorkspaces(ctx)
	if err != nil {
		return rep, err
	}
	var manifest *BundleManifest
	if opt.Bundle != "" {
		dir, err := bundleDir(opt.Bundle)
		if err != nil {
			return rep, err
		}
		rep.Remote, rep.Bundle = dir, true
		unlock, err := lockBundleDir(dir)
		if err != nil {
			return rep, err
		}
		defer unlock()
		m, err := readManifest(dir)
		if err != nil {
			return rep, err
		}
		manifest = &m
	} else {
		remote, err := gitops.NormalizeRemote(opt.Remote)
		if err != nil {
			return rep, err
		}
		rep.Remote = remote
		// One look at the remote first: one that is no repository or
		// cannot be reached fails the run at once, with its hint.
		if _, err := gitops.RemoteRefs(ctx, os.TempDir(), remote, gitops.BackupRefsRoot+rep.Box+"/"); err != nil {
			rep.TookMS = time.Since(start).Milliseconds()
			d.recordBackup(ctx, rep, err)
			return rep, err
		}
	}
	rep.OK = true
	for _, rr := range repos {
		br := BackupRepo{Repo: rr.Path, Key: gitops.RepoKey(rr.Path), Live: []BackupLive{}}
		if err := d.backupRepo(ctx, rr, wss, &rep, &br, manifest); err != nil {
			br.Error = firstLineOf(err.Error())
			rep.OK = false
		}
		for _, l := range br.Live {
			if l.Error != "" {
				rep.OK = false
			}
		}
		rep.Repos = append(rep.Repos, br)
	}
	if manifest != nil && !rep.DryRun {
		if err := uploadBundles(ctx, rep.Remote, opt.Upload, manifest); err != nil {
			rep.OK = false
			rep.UploadError = firstLineOf(err.Error())
		}
	}
	rep.TookMS = time.Since(start).Milliseconds()
	d.recordBackup(ctx, rep, rep.Err())
	return rep, nil
}

// backupRepo snapshots repository rr's at-risk worktrees (of wss), plans
// and (unless a dry run) pushes, or writes a bundle into the directory
// of manifest m; it fills br and adds to rep's totals.
func (d *Deps) backupRepo(ctx context.Context, rr grove.Repo, wss []grove.Workspace, rep *BackupReport, br *BackupRepo, m *BundleManifest) error {
	ns, err := gitops.BackupNamespace(rep.Box, br.Key)
	if err != nil {
		return err
	}
	repo, err := d.Repo(ctx, rr.Path)
	if err != nil {
		return err
	}
	live := map[string]string{}
	for _, ws := range wss {
		if ws.RepoID != rr.ID || skipForBackup(ws.State) {
			continue
		}
		l, ok := d.liveSnapshot(ctx, repo, ws)
		if !ok {
			continue
		}
		if l.Error == "" {
			live[l.ID] = l.Commit
		}
		br.Live = append(br.Live, l)
	}
	grove.Failpoint("backup.after-snapshots")
	if m != nil {
		plan, err := d.bundleRepo(ctx, repo, rr.Path, ns, live, rep, m)
		br.Plan = &plan
		if err != nil {
			return err
		}
		rep.Refs += len(plan.Refs)
		rep.Bytes += plan.Bytes
		return nil
	}
	plan, err := repo.PlanBackup(ctx, rep.Remote, ns, live)
	if err != nil {
		return err
	}
	br.Plan = &plan
	if !rep.DryRun && len(plan.Refs) > 0 {
		if err := repo.PushBackup(ctx, plan); err != nil {
			return err
		}
	}
	rep.Refs += len(plan.Refs)
	rep.Bytes += plan.Bytes
	return nil
}

// skipForBackup: warm-pool entries hold no one's work.
func skipForBackup(state string) bool {
	switch state {
	case grove.WorkspacePool, grove.WorkspaceClaiming, grove.WorkspaceStale, grove.WorkspaceRemoved:
		return true
	case grove.WorkspaceRemoving:
		// Being removed: into the trash (its tips kept under
		// refs/grove/trash/, backed up) or kept by the gate (snapshotted
		// by the next backup).
		return true
	}
	return false
}

// liveSnapshot runs the gate on ws and, when it keeps it, snapshots it
// (ok false: safe, or its directory is gone, nothing to take).
func (d *Deps) liveSnapshot(ctx context.Context, repo *gitops.Repo, ws grove.Workspace) (BackupLive, bool) {
	l := BackupLive{ID: liveID(ws), Path: ws.Path}
	gate := gitops.GateOptions{Branch: ws.Branch}
	if ws.TaskID != "" {
		if task, err := d.Store.Task(ctx, ws.TaskID); err == nil {
			gate = GateOptions(task, ws)
		}
	}
	gate.SkipProcesses = true // a process is no work a snapshot could hold
	gate.KeepIgnored = d.keepIgnored(ctx, repo, ws)
	rep := repo.AtRisk(ctx, ws.Path, gate)
	if rep.Safe || rep.Has(gitops.RiskMissing) {
		return l, false
	}
	for _, r := range rep.Risks {
		l.Reasons = append(l.Reasons, r.Reason)
	}
	commit, err := repo.SnapshotCommit(ctx, ws.Path, gitops.SnapshotOptions{KeepIgnored: gate.KeepIgnored})
	if err != nil {
		if _, serr := os.Lstat(ws.Path); errors.Is(serr, os.ErrNotExist) {
			return l, false // removed meanwhile (a close): nothing left to take
		}
		l.Error = firstLineOf(err.Error())
		return l, true
	}
	l.Commit = commit
	return l, true
}

// liveID names ws's live snapshot: its task id, session-<session id>, or
// ws-<workspace id>.
func liveID(ws grove.Workspace) string {
	switch {
	case ws.TaskID != "":
		return ws.TaskID
	case ws.SessionID != "":
		return "session-" + ws.SessionID
	}
	return "ws-" + strconv.FormatInt(ws.ID, 10)
}

func firstLineOf(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// BackupState is $GROVE_HOME/backup/state.json: the last backup run and
// the last one that succeeded, for doctor and ls --at-risk.
type BackupState struct {
	LastRun     *BackupRun `json:"last_run,omitempty"`
	LastSuccess *BackupRun `json:"last_success,omitempty"`
}

// BackupRun is one recorded run.
type BackupRun struct {
	At     time.Time `json:"at"`
	Remote string    `json:"remote"`
	OK     bool      `json:"ok"`
	Error  string    `json:"error,omitempty"`
	Refs   int       `json:"refs"`
	Bytes  int64     `json:"bytes"`
	TookMS int64     `json:"took_ms"`
}

// BackupStatePath is where BackupState lives under home.
func BackupStatePath(home string) string { return filepath.Join(home, "backup", "state.json") }

// ReadBackupState reads home's backup state; a home that never backed
// up has the zero state. A file that cannot be read or parsed is an
// error (doctor shows it as a problem).
func ReadBackupState(home string) (BackupState, error) {
	var st BackupState
	b, err := os.ReadFile(BackupStatePath(home))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read backup state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("read backup state %s: %w", BackupStatePath(home), err)
	}
	return st, nil
}

// recordBackup writes the run into the state file (atomically: a
// temporary file renamed over it) and the event log; failures to record
// are logged. Dry runs record nothing.
func (d *Deps) recordBackup(ctx context.Context, rep BackupReport, runErr error) {
	if rep.DryRun {
		return
	}
	run := &BackupRun{At: rep.At, Remote: rep.Remote, OK: runErr == nil, Refs: rep.Refs, Bytes: rep.Bytes, TookMS: rep.TookMS}
	if runErr != nil {
		run.Error = firstLineOf(runErr.Error())
	}
	st, err := ReadBackupState(d.Home)
	if err != nil {
		d.Logger.Warn("backup state unreadable: starting it afresh", "err", err)
	}
	st.LastRun = run
	if run.OK {
		st.LastSuccess = run
	}
	if err := writeJSONAtomic(BackupStatePath(d.Home), st); err != nil {
		d.Logger.Error("record backup", "err", err)
	}
	kind, msg := "backup", fmt.Sprintf("backup to %s: %d refs sent (about %d bytes) in %d ms", rep.Remote, rep.Refs, rep.Bytes, rep.TookMS)
	if runErr != nil {
		kind, msg = "backup_failed", run.Error
	}
	if err := d.Store.AddEvent(ctx, "", "", kind, msg); err != nil {
		d.Logger.Error("record backup event", "err", err)
	}
}

// writeJSONAtomic writes v as JSON to path through a temporary file in
// the same directory, synced and renamed over path.
func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // after a successful rename: no such file
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// QueueBackup is the scheduled backup's own queue (one worker): a long
// backup never holds up the maintenance queue's reaper and evictions.
const QueueBackup = "backup"

// AddBackupQueue adds QueueBackup to the daemon's client (before or after
// Start): on PostgreSQL, st's host's (every box backs up its own disk).
func AddBackupQueue(c *Client, st *store.Store) error {
	name := QueueBackup
	if st.Postgres() {
		name = HostQueue(QueueBackup, st.Host())
	}
	if err := c.Queues().Add(name, river.QueueConfig{MaxWorkers: 1}); err != nil {
		return fmt.Errorf("add backup queue: %w", err)
	}
	return nil
}

// BackupArgs is one scheduled backup (grove serve --backup-every), on
// QueueBackup.
type BackupArgs struct {
	Remote string `json:"remote"`
	Box    string `json:"box,omitempty"`
}

// Kind is stable: it is stored in river_job rows.
func (BackupArgs) Kind() string { return "backup" }

// InsertOpts: one run at a time; a run already waiting or running makes
// another insert a no-op.
func (BackupArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueBackup, MaxAttempts: 1, UniqueOpts: oneAtATime}
}

// BackupWorker runs Backup. A failed run is recorded (state file, event,
// log) and the job still succeeds: the next scheduled run tries again.
type BackupWorker struct {
	river.WorkerDefaults[BackupArgs]
	d *Deps
}

// AddBackupWorker registers the backup worker (for ServeConfig.ExtraWork).
func AddBackupWorker(workers *river.Workers, d *Deps) {
	river.AddWorker(workers, &BackupWorker{d: d})
}

// Timeout allows a first backup of large repositories.
func (w *BackupWorker) Timeout(*river.Job[BackupArgs]) time.Duration { return 2 * time.Hour }

// Work runs one backup and logs its outcome.
func (w *BackupWorker) Work(ctx context.Context, job *river.Job[BackupArgs]) error {
	rep, err := Backup(ctx, w.d, BackupOptions{Remote: job.Args.Remote, Box: job.Args.Box})
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		w.d.Logger.Error("backup failed", "remote", job.Args.Remote, "err", err, "hint", grove.HintOf(err))
		return nil
	}
	w.d.Logger.Info("backup", "remote", rep.Remote, "refs", rep.Refs, "bytes", rep.Bytes, "took", time.Duration(rep.TookMS)*time.Millisecond)
	return nil
}

// BackupSchedule is $GROVE_HOME/backup/schedule.json: the scheduled
// backup of the daemon that last started on this home (none: no file),
// so that doctor can tell a backup that is overdue.
type BackupSchedule struct {
	Spec   string    `json:"spec"` // a cron spec (scheduler.Parse)
	Remote string    `json:"remote"`
	Since  time.Time `json:"since"` // when the daemon started with it
}

// BackupSchedulePath is where BackupSchedule lives under home.
func BackupSchedulePath(home string) string { return filepath.Join(home, "backup", "schedule.json") }

// WriteBackupSchedule records s (nil: no scheduled backup, the file is
// removed).
func WriteBackupSchedule(home string, s *BackupSchedule) error {
	if s == nil {
		if err := os.Remove(BackupSchedulePath(home)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove backup schedule: %w", err)
		}
		return nil
	}
	return writeJSONAtomic(BackupSchedulePath(home), s)
}

// ReadBackupSchedule reads home's backup schedule; nil when there is none.
func ReadBackupSchedule(home string) (*BackupSchedule, error) {
	b, err := os.ReadFile(BackupSchedulePath(home))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read backup schedule: %w", err)
	}
	var s BackupSchedule
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read backup schedule %s: %w", BackupSchedulePath(home), err)
	}
	return &s, nil
}
