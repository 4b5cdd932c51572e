package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// DefaultReapGrace is how long a worktree without a live owner stays
// untouched before the reaper considers it.
const DefaultReapGrace = time.Hour

// ReapArgs is one reaper pass (periodic, on the maintenance queue).
type ReapArgs struct {
	DryRun bool `json:"dry_run,omitempty"`
}

// Kind is stable: it is stored in river_job rows.
func (ReapArgs) Kind() string { return "reap" }

// InsertOpts puts the job on the maintenance queue, one pass at a time: a
// pass already waiting or running makes another insert a no-op.
func (ReapArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 1, UniqueOpts: river.UniqueOpts{
		ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending,
			rivertype.JobStateRunning, rivertype.JobStateScheduled, rivertype.JobStateRetryable},
	}}
}

// ReapWorker runs Reap with the daemon's clock and grace.
type ReapWorker struct {
	river.WorkerDefaults[ReapArgs]
	d     *Deps
	grace time.Duration
	now   func() time.Time
}

// AddReapWorker registers the reap worker (for ServeConfig.ExtraWork),
// with grace as given (0: none; DefaultReapGrace is the usual one).
func AddReapWorker(workers *river.Workers, d *Deps, grace time.Duration) {
	river.AddWorker(workers, &ReapWorker{d: d, grace: grace, now: time.Now})
}

// Timeout allows removing many large worktrees in one pass.
func (w *ReapWorker) Timeout(*river.Job[ReapArgs]) time.Duration { return 30 * time.Minute }

// Work runs one pass and logs what it did.
func (w *ReapWorker) Work(ctx context.Context, job *river.Job[ReapArgs]) error {
	rep, err := Reap(ctx, w.d, w.now(), w.grace, job.Args.DryRun)
	purgeTrashPass(ctx, w.d, w.now(), job.Args.DryRun) // the trash's retention (trash.go)
	w.d.Logger.Info("reap pass", "removed", rep.Count(ReapRemoved), "pruned", rep.Count(ReapPruned),
		"kept", rep.Count(ReapKept), "young", rep.Count(ReapSkippedYoung), "dry_run", job.Args.DryRun,
		"took", time.Duration(rep.TookMS)*time.Millisecond)
	return err
}

// What the reaper did (or, in a dry run, would do) with one worktree.
const (
	ReapRemoved      = "removed"       // the gate said safe: worktree (and task branch) removed, row archived
	ReapKept         = "kept"          // at risk, or not ours to delete: left alone, reasons recorded
	ReapPruned       = "pruned"        // the directory was gone: git metadata pruned, row archived
	ReapWouldRemove  = "would_remove"  // dry run of removed
	ReapWouldPrune   = "would_prune"   // dry run of pruned
	ReapSkippedYoung = "skipped_young" // idle for less than the grace
)

// Reasons the reaper keeps a worktree besides the gate's (gitops.Risk*).
const (
	ReasonNotWorktree = "not_a_worktree" // not a worktree of a known repository: never deleted
	ReasonOwnerBack   = "owner_active"   // its task started again during the pass
)

// WorkspaceOrphan is the state of a workspace row the reaper records for
// an at-risk worktree it found without one (no task, no session).
const WorkspaceOrphan = "orphan"

// ReapItem is one worktree the reaper looked at.
type ReapItem struct {
	Path        string        `json:"path"`
	Repo        string        `json:"repo,omitempty"`
	TaskID      string        `json:"task_id,omitempty"`
	SessionID   string        `json:"session_id,omitempty"`
	Owner       string        `json:"owner"` // the task's state, "session closed", or "unknown"
	Action      string        `json:"action"`
	IdleSeconds int64         `json:"idle_seconds"`
	Reasons     []gitops.Risk `json:"reasons,omitempty"`
}

// ReapReport is what one pass did (or would do), item by item.
type ReapReport struct {
	At     time.Time  `json:"at"`
	Grace  string     `json:"grace"`
	DryRun bool       `json:"dry_run"`
	Items  []ReapItem `json:"items"`
	TookMS int64      `json:"took_ms"`
}

// Count is how many items got action.
func (r ReapReport) Count(action string) int {
	n := 0
	for _, it := range r.Items {
		if it.Action == action {
			n++
		}
	}
	return n
}

// reapable are the task states whose worktree has no live owner. review
// is not one: it waits on a person.
var reapable = []grove.TaskState{grove.StateFailed, grove.StateCanceled, grove.StateApplied,
	grove.StateClosed, grove.StateDiscarded, grove.StateConflict}

// Reap is one reaper pass, as of now. Candidates are:
//
//   - live workspace rows whose owner is gone: a task in a reapable state
//     (failed, canceled, applied, closed, discarded, conflict), a closed
//     session, or none at all (a warm-pool entry is owned by the pool,
//     unless it went stale);
//   - directories under $GROVE_HOME/worktrees/*/* and entries of
//     `git worktree list` of every known repository that live under
//     $GROVE_HOME/worktrees, when no live row has their path (unknown).
//
// A candidate idle for less than grace is skipped (idle: since the row's
// last_used_at or the newest of the directory's, its index's and its
// HEAD's mtimes, whichever is later). A missing directory has its git
// metadata pruned (`git worktree prune` under the repository lock) and its
// row archived; the branch stays. Otherwise the at-risk gate decides: safe
// means removed (RemoveWorktree under the repository lock; a task's branch
// is deleted, any other branch kept), the row archived and an event
// recorded, and an applied, discarded or conflicting task moves to closed;
// at risk means kept, with the gate's report stored on the row (an unknown
// worktree gets a row in state "orphan" for it) so `grove ls --at-risk`
// shows it. A directory that is not a worktree of a known repository is
// never deleted. Rows are archived, never deleted.
//
// With dryRun nothing is changed or recorded. Errors on one worktree are
// reported on its item (as a git_error reason, the worktree kept) and the
// pass goes on; the returned error is for failures that stop the pass.
func Reap(ctx context.Context, d *Deps, now time.Time, grace time.Duration, dryRun bool) (rep ReapReport, err error) {
	start := time.Now()
	rep = ReapReport{At: now, Grace: grace.String(), DryRun: dryRun, Items: []ReapItem{}}
	defer func() { rep.TookMS = time.Since(start).Milliseconds() }()
	r := &reaper{d: d, now: now, grace: grace, dry: dryRun}

	owned, err := d.Store.OwnedWorkspaces(ctx)
	if err != nil {
		return rep, err
	}
	repos, err := d.Store.Repos(ctx)
	if err != nil {
		return rep, err
	}
	live := map[string]bool{}
	for _, w := range owned {
		live[canon(w.Path)] = true
	}
	for _, w := range owned {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if owner, gone := ownerGone(w); gone {
			rep.Items = append(rep.Items, r.row(ctx, w, owner))
		}
	}

	// Unknown worktrees: registered in a known repository, under the home.
	root := canon(filepath.Join(d.Home, "worktrees"))
	known := map[string]bool{} // every worktree path of a known repository
	for _, row := range repos {
		repo, err := d.Repo(ctx, row.Path)
		if err != nil {
			d.Logger.Warn("reap: cannot open repository", "repo", row.Path, "err", err)
			continue
		}
		wts, err := repo.Worktrees(ctx)
		if err != nil {
			d.Logger.Warn("reap: cannot list worktrees", "repo", row.Path, "err", err)
			continue
		}
		for _, e := range wts {
			p := canon(e.Path)
			known[p] = true
			if live[p] || !within(p, root) {
				continue
			}
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			rep.Items = append(rep.Items, r.unknownWorktree(ctx, repo, row, e))
			live[p] = true // seen
		}
	}

	// Anything else under $GROVE_HOME/worktrees/*/*: never ours to delete.
	dirs, _ := filepath.Glob(filepath.Join(d.Home, "worktrees", "*", "*"))
	sort.Strings(dirs)
	for _, dir := range dirs {
		p := canon(dir)
		if live[p] || known[p] || insideAny(p, known) || insideAny(p, live) {
			continue
		}
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
			continue
		}
		rep.Items = append(rep.Items, r.stranger(dir))
	}
	return rep, nil
}

type reaper struct {
	d     *Deps
	now   time.Time
	grace time.Duration
	dry   bool
}

// ownerGone says whether a workspace row has no live owner, and who owned it.
func ownerGone(w store.OwnedWorkspace) (owner string, gone bool) {
	switch {
	case w.SessionID != "":
		return "session " + w.SessionState, w.SessionState == "closed" // grove.SessionClosed
	case w.TaskID != "":
		return string(w.TaskState), in(w.TaskState, reapable...)
	case w.State == grove.WorkspacePool || w.State == grove.WorkspacePoolCreating || w.State == grove.WorkspacePoolMoving:
		return "warm pool", false // the pool owns it (a stale entry it gave up on does not count)
	}
	return "unknown", true
}

// row handles a workspace row whose owner is gone.
func (r *reaper) row(ctx context.Context, w store.OwnedWorkspace, owner string) ReapItem {
	d := r.d
	it := ReapItem{Path: w.Path, Repo: w.RepoPath, TaskID: w.TaskID, SessionID: w.SessionID, Owner: owner}
	repo, err := d.Repo(ctx, w.RepoPath)
	if err != nil {
		it.Action, it.Reasons = ReapKept, gitError("open repository", err)
		r.recordKept(ctx, w, it)
		return it
	}
	if _, err := os.Lstat(w.Path); errors.Is(err, fs.ErrNotExist) {
		if r.dry {
			it.Action = ReapWouldPrune
			return it
		}
		if err := repo.RetireWorktree(ctx, w.Path, "", d.TrashDir(), gitops.Report{}); err != nil { // forgets this one record only
			it.Action, it.Reasons = ReapKept, gitError("prune", err)
			return it
		}
		it.Action = ReapPruned
		r.archive(ctx, w, "reap_pruned", "worktree directory was gone: git metadata pruned, row archived")
		return it
	}
	idle := r.now.Sub(later(w.LastUsedAt, activity(w.Path)))
	it.IdleSeconds = int64(idle.Seconds())
	if idle < r.grace {
		it.Action = ReapSkippedYoung
		return it
	}
	opt, branch := gitops.GateOptions{}, "" // not a task's: its branch is kept
	if w.TaskID != "" && w.SessionID == "" {
		opt = GateOptions(grove.Task{ID: w.TaskID, State: w.TaskState}, w.Workspace)
		branch = w.Branch
	} else if w.SessionID != "" {
		opt.Branch = w.Branch
	}
	report := repo.AtRisk(ctx, w.Path, opt)
	if !report.Safe {
		it.Action, it.Reasons = ReapKept, report.Risks
		r.recordKept(ctx, w, it)
		return it
	}
	if r.dry {
		it.Action = ReapWouldRemove
		return it
	}
	// The owner may have come back (grove retry) since the list was read.
	if w.TaskID != "" && w.SessionID == "" {
		t, err := d.Store.Task(ctx, w.TaskID)
		if err != nil || !in(t.State, reapable...) {
			it.Action = ReapKept
			it.Reasons = []gitops.Risk{{Reason: ReasonOwnerBack, Detail: fmt.Sprintf("task is %s", t.State)}}
			return it
		}
	}
	if err := repo.RetireWorktree(ctx, w.Path, branch, d.TrashDir(), report); err != nil { // into the trash
		it.Action, it.Reasons = ReapKept, gitError("remove", err)
		r.recordKept(ctx, w, it)
		return it
	}
	it.Action = ReapRemoved
	r.archive(ctx, w, "reaped", fmt.Sprintf("worktree removed by the reaper (owner %s, idle %s)", owner, idle.Round(time.Second)))
	return it
}

// unknownWorktree handles a worktree of a known repository, under the
// home, that no live row has.
func (r *reaper) unknownWorktree(ctx context.Context, repo *gitops.Repo, row grove.Repo, e gitops.WorktreeEntry) ReapItem {
	d := r.d
	it := ReapItem{Path: e.Path, Repo: row.Path, Owner: "unknown"}
	if _, err := os.Lstat(e.Path); errors.Is(err, fs.ErrNotExist) {
		if r.dry {
			it.Action = ReapWouldPrune
			return it
		}
		if err := repo.RetireWorktree(ctx, e.Path, "", d.TrashDir(), gitops.Report{}); err != nil { // forgets this one record only
			it.Action, it.Reasons = ReapKept, gitError("prune", err)
			return it
		}
		it.Action = ReapPruned
		r.event(ctx, "", "", "reap_pruned", "unknown worktree "+e.Path+" was gone: git metadata pruned")
		return it
	}
	seen := activity(e.Path)
	idle := r.now.Sub(seen)
	it.IdleSeconds = int64(idle.Seconds())
	if idle < r.grace {
		it.Action = ReapSkippedYoung
		return it
	}
	report := repo.AtRisk(ctx, e.Path, gitops.GateOptions{}) // its branch is kept
	if !report.Safe {
		it.Action, it.Reasons = ReapKept, report.Risks
		if !r.dry {
			err := d.Store.InTx(ctx, func(tx *store.Tx) error {
				ws, err := tx.AdoptWorkspace(ctx, grove.Workspace{RepoID: row.ID, Path: e.Path, Branch: e.Branch,
					BaseCommit: e.Head, HeadCommit: e.Head, State: WorkspaceOrphan, AtRisk: riskJSON(report), LastUsedAt: seen})
				if err != nil {
					return err
				}
				if err := tx.SetWorkspaceRisk(ctx, ws.ID, riskJSON(report)); err != nil {
					return err
				}
				return tx.AddEvent(ctx, "", "", "reap_kept", "unknown worktree "+e.Path+" kept, at risk: "+reasonList(report.Risks))
			})
			if err != nil {
				d.Logger.Warn("reap: cannot record unknown worktree", "path", e.Path, "err", err)
			}
			d.Logger.Warn("reap: unknown worktree kept", "path", e.Path, "reasons", reasonList(report.Risks))
		}
		return it
	}
	if r.dry {
		it.Action = ReapWouldRemove
		return it
	}
	if err := repo.RetireWorktree(ctx, e.Path, "", d.TrashDir(), report); err != nil { // into the trash
		it.Action, it.Reasons = ReapKept, gitError("remove", err)
		return it
	}
	it.Action = ReapRemoved
	d.Logger.Info("reap: unknown worktree removed", "path", e.Path, "idle", idle.Round(time.Second))
	r.event(ctx, "", "", "reaped", fmt.Sprintf("unknown worktree %s removed (branch %s kept, idle %s)", e.Path, e.Branch, idle.Round(time.Second)))
	return it
}

// stranger reports a directory under the home that is no worktree of a
// known repository. It is never deleted.
func (r *reaper) stranger(dir string) ReapItem {
	it := ReapItem{Path: dir, Owner: "unknown", Action: ReapKept,
		IdleSeconds: int64(r.now.Sub(activity(dir)).Seconds()),
		Reasons:     []gitops.Risk{{Reason: ReasonNotWorktree, Detail: "not a worktree of a known repository; grove never deletes it"}}}
	if pids, err := gitops.ProcessesIn(dir); err == nil && len(pids) > 0 {
		it.Reasons = append(it.Reasons, gitops.Risk{Reason: gitops.RiskProcess, Detail: fmt.Sprintf("pids %v", pids)})
	}
	return it
}

// recordKept stores the reasons a row's worktree was kept, with an event
// when they changed since the last pass (so a kept worktree does not add
// an event every pass).
func (r *reaper) recordKept(ctx context.Context, w store.OwnedWorkspace, it ReapItem) {
	if r.dry {
		return
	}
	report := riskJSON(gitops.Report{Path: w.Path, Safe: false, Risks: it.Reasons})
	if report == w.AtRisk {
		return
	}
	err := r.d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetWorkspaceRisk(ctx, w.ID, report); err != nil {
			return err
		}
		return tx.AddEvent(ctx, w.TaskID, w.SessionID, "reap_kept", "worktree kept by the reaper, at risk: "+reasonList(it.Reasons))
	})
	if err != nil {
		r.d.Logger.Warn("reap: cannot record refusal", "path", w.Path, "err", err)
	}
	r.d.Logger.Warn("reap: worktree kept", "path", w.Path, "task", w.TaskID, "reasons", reasonList(it.Reasons))
}

// archive archives a row whose worktree is gone, with an event; a task
// that was applied, discarded or in conflict moves to closed.
func (r *reaper) archive(ctx context.Context, w store.OwnedWorkspace, kind, msg string) {
	err := r.d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetWorkspaceRisk(ctx, w.ID, ""); err != nil {
			return err
		}
		if err := tx.ArchiveWorkspace(ctx, w.ID); err != nil {
			return err
		}
		if w.TaskID != "" && w.SessionID == "" && in(w.TaskState, grove.StateApplied, grove.StateDiscarded, grove.StateConflict) {
			if _, err := tx.SetState(ctx, w.TaskID, []grove.TaskState{w.TaskState}, grove.StateClosed, ""); err != nil {
				return err
			}
		}
		return tx.AddEvent(ctx, w.TaskID, w.SessionID, kind, msg)
	})
	if err != nil {
		r.d.Logger.Warn("reap: cannot archive workspace", "path", w.Path, "err", err)
		return
	}
	r.d.Logger.Info("reap: "+msg, "path", w.Path, "task", w.TaskID)
}

func (r *reaper) event(ctx context.Context, taskID, sessionID, kind, msg string) {
	if err := r.d.Store.AddEvent(ctx, taskID, sessionID, kind, msg); err != nil {
		r.d.Logger.Warn("reap: cannot record event", "kind", kind, "err", err)
	}
}

// riskJSON is a gate report as stored on a workspace row.
func riskJSON(rep gitops.Report) string {
	b, err := json.Marshal(rep)
	if err != nil {
		return fmt.Sprintf(`{"error": %q}`, err.Error())
	}
	return string(b)
}

func gitError(what string, err error) []gitops.Risk {
	return []gitops.Risk{{Reason: gitops.RiskGitError, Detail: what + ": " + err.Error()}}
}

func reasonList(risks []gitops.Risk) string {
	s := make([]string, len(risks))
	for i, r := range risks {
		s[i] = r.Reason
	}
	return strings.Join(s, ", ")
}

// activity is the newest of the mtimes of dir, and of its worktree's index,
// HEAD and HEAD reflog: when it was last worked in, as far as the disk
// tells. Zero if none can be read.
func activity(dir string) time.Time {
	var t time.Time
	paths := []string{dir}
	if b, err := os.ReadFile(filepath.Join(dir, ".git")); err == nil {
		if gd, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir: "); ok {
			if !filepath.IsAbs(gd) {
				gd = filepath.Join(dir, gd)
			}
			paths = append(paths, filepath.Join(gd, "index"), filepath.Join(gd, "HEAD"), filepath.Join(gd, "logs", "HEAD"))
		}
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.ModTime().After(t) {
			t = fi.ModTime()
		}
	}
	return t
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// canon is p cleaned and, where it exists, with symlinks resolved (its
// parent's, if p itself is gone), so paths from git, the database and the
// disk compare equal.
func canon(p string) string {
	p = filepath.Clean(p)
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	if r, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
		return filepath.Join(r, filepath.Base(p))
	}
	return p
}

// within reports whether p is strictly inside dir.
func within(p, dir string) bool { return strings.HasPrefix(p, dir+string(filepath.Separator)) }

// insideAny reports whether p is strictly inside one of the paths in set.
func insideAny(p string, set map[string]bool) bool {
	for q := p; ; {
		parent := filepath.Dir(q)
		if parent == q {
			return false
		}
		if set[parent] {
			return true
		}
		q = parent
	}
}
