package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

// SetupArgs prepares a task's new worktree between create_worktree and
// run_agent: the configured ignored files are copied from the main
// checkout, then each setup command runs with `sh -c` under a supervisor.
// The task stays `preparing` throughout.
type SetupArgs struct {
	TaskID  string        `json:"task_id"`
	Attempt int           `json:"attempt"`
	Timeout time.Duration `json:"timeout"` // every command's bound, summed: sizes the job timeout
}

// Kind is stable: it is stored in river_job rows.
func (SetupArgs) Kind() string { return "setup" }

// InsertOpts puts the job on the agent queue: a setup is a long run like
// an agent's, and must not hold a git worker.
func (SetupArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueAgent, MaxAttempts: 10}
}

// SetupWorker runs (or re-adopts) a task's setup and hands off to run_agent,
// or fails the task with reason setup_failed.
type SetupWorker struct {
	river.WorkerDefaults[SetupArgs]
	d *Deps
}

// Timeout is the commands' bounds plus room for kill sequences and copies.
func (w *SetupWorker) Timeout(job *river.Job[SetupArgs]) time.Duration {
	return job.Args.Timeout + 10*time.Minute
}

// ReasonSetupFailed starts the error of a task whose setup failed.
const ReasonSetupFailed = "setup_failed"

// SetupDir is the directory of a task attempt's setup: one supervisor run
// directory per command (0, 1, ...) and a `copied` marker.
func SetupDir(home, taskID string, attempt int) string {
	return RunDir(home, taskID, attempt) + "-setup"
}

// Work never runs a command twice for one attempt: each command has its
// own run directory, and supervise.Probe tells one never started from one
// alive (adopted) or ended (collected). A worktree already set up under
// the same key (a warm-pool entry, a retried task) skips it all.
func (w *SetupWorker) Work(ctx context.Context, job *river.Job[SetupArgs]) error {
	d, id := w.d, job.Args.TaskID
	client := river.ClientFromContext[*sqlTx](ctx)
	task, ok, err := d.stageTask(ctx, id, grove.StatePreparing)
	if err != nil || !ok || task.Attempt != job.Args.Attempt {
		return err
	}
	ws, err := d.Store.TaskWorkspace(ctx, id)
	if err != nil {
		return err
	}
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "open repository", err)
	}
	s, key, err := d.settingsAt(ctx, repo, task.BaseCommit)
	if err != nil {
		return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "read settings", err)
	}
	if key == "" || ws.SetupKey == key {
		return d.handOffAgent(ctx, client, task, ws, "")
	}
	start := time.Now()
	res, err := d.runSetup(ctx, repo, s, ws, setupRun{dir: SetupDir(d.Home, id, task.Attempt),
		env: AgentEnv(task, ws, 0), taskID: id})
	if err != nil {
		if errors.Is(err, errStopping) {
			return river.JobSnooze(0) // the next daemon adopts the command
		}
		// A copy or a supervisor that cannot start: retried, then the task
		// fails (never left preparing by a discarded job).
		return d.stageError(ctx, client, id, job.Attempt, job.MaxAttempts, "set up worktree", err)
	}
	if res.failed != "" {
		return d.failSetup(ctx, client, task, res)
	}
	return d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetSetupKey(ctx, ws.ID, key); err != nil {
			return err
		}
		ws.SetupKey = key
		return d.handOffAgentTx(ctx, client, tx, task, ws, fmt.Sprintf("setup done in %s (%s)", time.Since(start).Round(time.Millisecond), res.summary))
	})
}

// errStopping: the daemon is stopping while a setup command runs (it
// keeps running; the next daemon adopts it).
var errStopping = errors.New("daemon stopping")

// setupRun is where and how one worktree's setup runs.
type setupRun struct {
	dir    string   // holds the copied marker and one run dir per command
	env    []string // the commands' environment
	taskID string   // "" for a pool entry (no cancel to watch)
}

// setupResult is how a setup ended: failed is "" on success, else the
// task's error (reason, command, exit, log tail).
type setupResult struct {
	failed   string
	canceled bool
	summary  string
}

// runSetup copies the configured files (once per dir: a marker records
// it), then runs each setup command in order under a supervisor, adopting
// one that a previous daemon started. It stops at the first failure.
func (d *Deps) runSetup(ctx context.Context, repo *gitops.Repo, s grove.Settings, ws grove.Workspace, r setupRun) (setupResult, error) {
	var res setupResult
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return res, fmt.Errorf("create setup dir: %w", err)
	}
	marker := filepath.Join(r.dir, "copied")
	if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) && len(s.Copy) > 0 {
		c, err := repo.CopyIgnored(ctx, ws.Path, s.Copy)
		if err != nil {
			return res, err
		}
		msg := fmt.Sprintf("copied %d files (%d bytes, %d cloned) from %s: %s", c.Files, c.Bytes, c.Cloned, repo.Root, strings.Join(c.Paths, " "))
		if len(c.Skipped) > 0 {
			msg += "; not copied (tracked, not ignored, or an absolute symlink): " + strings.Join(c.Skipped, " ")
		}
		if err := os.WriteFile(marker, []byte(msg+"\n"), 0o600); err != nil {
			return res, fmt.Errorf("record copy: %w", err)
		}
		d.setupEvent(ctx, r.taskID, "setup_copy", msg)
		grove.Failpoint("setup.after-copy")
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("read copy marker: %w", err)
	}
	for i, line := range s.Setup {
		dir := filepath.Join(r.dir, strconv.Itoa(i))
		exit, err := d.runSetupCommand(ctx, dir, ws, s, r, i, line)
		if err != nil {
			return res, err
		}
		if exit.Reason == supervise.ReasonCanceled && r.taskID != "" {
			res.canceled = true
			res.failed = "canceled during setup"
			return res, nil
		}
		if exit.Reason != supervise.ReasonExited || exit.Code != 0 {
			how := fmt.Sprintf("exited with code %d", exit.Code)
			if exit.Reason != supervise.ReasonExited {
				how = exit.Reason
				if exit.Message != "" {
					how += ": " + exit.Message
				}
			}
			res.failed = fmt.Sprintf("%s: setup command %d of %d (%s) %s; last lines of its log:\n%s",
				ReasonSetupFailed, i+1, len(s.Setup), line, how, logTail(filepath.Join(dir, supervise.LogFile), 10))
			return res, nil
		}
	}
	res.summary = fmt.Sprintf("%d commands", len(s.Setup))
	return res, nil
}

// runSetupCommand runs command i (line) of a setup in its own run
// directory, or adopts or collects the run a previous daemon started there.
func (d *Deps) runSetupCommand(ctx context.Context, dir string, ws grove.Workspace, s grove.Settings, r setupRun, i int, line string) (supervise.Exit, error) {
	status, exit, err := supervise.Probe(dir)
	if err != nil {
		return exit, err
	}
	var done <-chan struct{}
	switch status {
	case supervise.Ended, supervise.Lost:
		return exit, nil
	case supervise.NotStarted:
		if r.taskID != "" {
			if t, err := d.Store.Task(ctx, r.taskID); err != nil {
				return exit, err
			} else if t.CancelAsked {
				return supervise.Exit{Code: -1, Reason: supervise.ReasonCanceled}, nil
			}
		}
		spec := supervise.Spec{WorkDir: ws.Path, Argv: []string{"sh", "-c", line}, Env: r.env,
			Timeout: s.Timeout(), Grace: d.Grace, Sweep: true}
		started, err := d.startSupervisor(dir, spec)
		if err != nil {
			return exit, err
		}
		grove.Failpoint("setup.after-start")
		done = started.Done
		d.setupEvent(ctx, r.taskID, "setup_started", fmt.Sprintf("setup command %d (%s) started under supervisor pid %d", i+1, line, started.Pid))
	case supervise.Running:
		d.setupEvent(ctx, r.taskID, "setup_adopted", fmt.Sprintf("setup command %d (%s) re-adopted", i+1, line))
	}
	waitCtx, cancel := d.untilShutdown(ctx)
	defer cancel()
	var ticks int
	exit, err = supervise.Wait(waitCtx, dir, done, d.Poll, func() {
		if ticks++; ticks%10 == 0 && r.taskID != "" {
			if t, err := d.Store.Task(ctx, r.taskID); err == nil && t.CancelAsked {
				if err := SignalRun(dir, syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
					d.Logger.Warn("forward cancel to setup", "task", r.taskID, "err", err)
				}
			}
		}
	})
	if err != nil && waitCtx.Err() != nil && ctx.Err() == nil {
		return exit, errStopping
	}
	return exit, err
}

// setupEvent records a setup event for a task (none for a pool entry).
func (d *Deps) setupEvent(ctx context.Context, taskID, kind, msg string) {
	if taskID == "" {
		d.Logger.Info(msg, "kind", kind)
		return
	}
	if err := d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.AddEvent(ctx, taskID, "", kind, msg) }); err != nil {
		d.Logger.Warn("record setup event", "task", taskID, "err", err)
	}
}

// failSetup fails a task whose setup failed, and keeps its worktree for
// inspection (no close is enqueued; `grove close` removes it through the
// gate, `grove retry` runs setup again in it).
func (d *Deps) failSetup(ctx context.Context, client *Client, task grove.Task, res setupResult) error {
	msg := res.failed
	return d.Store.InTx(ctx, func(tx *store.Tx) error {
		if res.canceled {
			// A cancel ends the task as any cancel does: a close cleans up.
			ok, err := tx.SetState(ctx, task.ID, []grove.TaskState{grove.StatePreparing}, grove.StateCanceled, "canceled")
			if err != nil || !ok {
				return err
			}
			return d.enqueue(ctx, client, tx, CloseArgs{TaskID: task.ID})
		}
		ok, err := tx.SetState(ctx, task.ID, []grove.TaskState{grove.StatePreparing}, grove.StateFailed, msg)
		if err != nil || !ok {
			return err
		}
		return tx.AddEvent(ctx, task.ID, "", ReasonSetupFailed, msg+"\nworktree kept; grove retry "+task.ID+" runs setup again, grove close "+task.ID+" removes it")
	})
}

// handOffAgent inserts run_agent for a task whose worktree is ready.
func (d *Deps) handOffAgent(ctx context.Context, client *Client, task grove.Task, ws grove.Workspace, msg string) error {
	return d.Store.InTx(ctx, func(tx *store.Tx) error { return d.handOffAgentTx(ctx, client, tx, task, ws, msg) })
}

// handOffAgentTx is handOffAgent in tx: unless the task was canceled
// meanwhile (then a close cleans up), run_agent is inserted.
func (d *Deps) handOffAgentTx(ctx context.Context, client *Client, tx *store.Tx, task grove.Task, ws grove.Workspace, msg string) error {
	cur, err := tx.Task(ctx, task.ID)
	if err != nil {
		return err
	}
	if cur.CancelAsked || cur.State != grove.StatePreparing {
		if _, err := tx.SetState(ctx, task.ID, []grove.TaskState{grove.StatePreparing}, grove.StateCanceled, "canceled"); err != nil {
			return err
		}
		return d.enqueue(ctx, client, tx, CloseArgs{TaskID: task.ID})
	}
	if msg != "" {
		if err := tx.AddEvent(ctx, task.ID, "", "setup_done", msg); err != nil {
			return err
		}
	}
	grove.Failpoint("setup.before-handoff")
	return d.enqueue(ctx, client, tx, RunAgentArgs{TaskID: task.ID, Attempt: task.Attempt, Timeout: task.Timeout})
}

// settingsCache entries: the settings and input ids at one commit, valid
// while the repository's config file is unchanged.
type settingsEntry struct {
	s      grove.Settings
	ids    map[string]string
	config string // the repository's config file, as read
}

// configText is the content of repo's config file ("" if unreadable): the
// key of the settings caches. Content, not mtime: git rewrites the file on
// every branch rename (a pool claim renames one), without changing it.
func configText(repo *gitops.Repo) string {
	b, _ := os.ReadFile(filepath.Join(repo.CommonDir, "config"))
	return string(b)
}

// settingsAt returns the settings for a worktree of repo at commit and the
// key of a setup under them (see gitops.Repo.SettingsAt), cached per
// commit while the repository's git config is unchanged; the copied
// files' stamps are read each time (a few stats).
func (d *Deps) settingsAt(ctx context.Context, repo *gitops.Repo, commit string) (grove.Settings, string, error) {
	ck := repo.CommonDir + "\x00" + commit
	cfg := configText(repo)
	if v, ok := d.settings.Load(ck); ok && v.(settingsEntry).config == cfg {
		e := v.(settingsEntry)
		return e.s, setupKey(repo, e.s, e.ids), nil
	}
	s, err := repo.ReadSettings(ctx, commit)
	if err != nil {
		return s, "", err
	}
	ids := map[string]string{}
	if s.Prepares() {
		if ids, err = repo.InputIDs(ctx, commit, s.SetupInputs); err != nil {
			return s, "", err
		}
	}
	d.settings.Store(ck, settingsEntry{s: s, ids: ids, config: cfg})
	return s, setupKey(repo, s, ids), nil
}

func setupKey(repo *gitops.Repo, s grove.Settings, ids map[string]string) string {
	if !s.Prepares() {
		return ""
	}
	all := make(map[string]string, len(ids))
	for k, v := range ids {
		all[k] = v
	}
	for k, v := range gitops.CopyStamps(repo.Root, s.Copy) {
		all["copy:"+k] = v
	}
	return s.SetupKey(all)
}

// SetupLog writes the logs of a task attempt's setup to w's callback in
// command order, each after a "$ command" header; ok is false when the
// attempt had no setup.
func SetupLog(home, taskID string, attempt int) (string, bool, error) {
	dir := SetupDir(home, taskID, attempt)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read setup dir: %w", err)
	}
	var idx []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && e.IsDir() {
			idx = append(idx, n)
		}
	}
	sort.Ints(idx)
	var b strings.Builder
	if m, err := os.ReadFile(filepath.Join(dir, "copied")); err == nil {
		b.WriteString("# " + string(m))
	}
	for _, i := range idx {
		sub := filepath.Join(dir, strconv.Itoa(i))
		var spec supervise.Spec
		if raw, err := os.ReadFile(filepath.Join(sub, supervise.SpecFile)); err == nil {
			_ = json.Unmarshal(raw, &spec)
		}
		line := ""
		if len(spec.Argv) == 3 {
			line = spec.Argv[2]
		}
		fmt.Fprintf(&b, "$ %s\n", line)
		logb, err := os.ReadFile(filepath.Join(sub, supervise.LogFile))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", true, fmt.Errorf("read setup log: %w", err)
		}
		b.Write(logb)
		if e, ok, _ := supervise.ReadExit(sub); ok {
			fmt.Fprintf(&b, "# %s, exit code %d\n", e.Reason, e.Code)
		}
	}
	return b.String(), true, nil
}

// keepIgnored is the at-risk gate's list of ignored paths that a removal
// of ws may delete without a snapshot: the repository's keep_ignored
// setting at the worktree's base (the gate's default list without one),
// plus the copied files still identical to the main checkout's. Settings
// that cannot be read give the default list (the conservative one).
func (d *Deps) keepIgnored(ctx context.Context, repo *gitops.Repo, ws grove.Workspace) []string {
	s, _, err := d.settingsAt(ctx, repo, ws.BaseCommit)
	if err != nil {
		d.Logger.Warn("settings unreadable, the gate keeps its default list", "path", ws.Path, "err", err)
		return nil
	}
	keep := s.KeepIgnored
	if keep == nil {
		keep = gitops.DefaultKeepIgnored
	}
	if len(s.Copy) == 0 {
		return s.KeepIgnored
	}
	return append(append([]string{}, keep...), repo.UnchangedCopies(ws.Path, s.Copy)...)
}
