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
	"github.com/grove-dev/grove/gitops/procscan"
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
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 1, UniqueOpts: oneAtATime}
}

// oneAtATime makes an insert a no-op while a job of the same kind waits
// or runs (a periodic pass that would only repeat the one in flight).
var oneAtATime = river.UniqueOpts{ByState: []rivertype.JobState{rivertype.JobStateAvailable,
	rivertype.JobStatePending, rivertype.JobStateRunning, rivertype.JobStateScheduled, rivertype.JobStateRetryable}}

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
	purgeTrashPass(ctx, w.d, w.now(), job.Args.DryRun)    // the trash's retention (trash.go)
	pruneTaskRefsPass(ctx, w.d, w.now(), job.Args.DryRun) // refs/grove/tasks/* retention (refs_retention.go)
	w.d.Logger.Info("reap pass", "removed", rep.Count(ReapRemoved), "pruned", rep.Count(ReapPruned),
		"kept", rep.Count(ReapKept), "young", rep.Count(ReapSkippedYoung), "busy", rep.Count(ReapSkippedBusy), "dry_run", job.Args.DryRun,
		"took", time.Duration(rep.TookMS)*time.Millisecond)
	return err
}

// What the reaper did (or, in a dry run, would do) with one worktree.
const (
	ReapRemoved      = "removed"       // the gate said safe: worktree (and task branch) removed, row archived
	ReapKept         = "kept"          // at risk, or not ours to delete: left alone, reasons recorded
	ReapPruned       = "pruned"        // the directory was gone: git's record of it forgotten, row archived
	ReapWouldRemove  = "would_remove"  // dry run of removed
	ReapWouldPrune   = "would_prune"   // dry run of pruned
	ReapSkippedYoung = "skipped_young" // idle for less than the grace
	ReapSkippedBusy  = "skipped_busy"  // another remover (a close) holds it
)

// Reasons the reaper keeps a worktree besides the gate's (gitops.Risk*).
const (
	ReasonNotWorktree = "not_a_worktree" // not a worktree of a known repository: never deleted
	ReasonOwnerBack   = "owner_active"   // its task started again during the pass
)

// WorkspaceOrphan is the state of a workspace row the reaper records for
// an at-risk worktree it found without one (no task, no session).
const WorkspaceOrphan = grove.WorkspaceOrphan

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
// HEAD's mtimes, whichever is later). Every removal goes through Remove
// (the claim, the gate, RetireWorktree, the archive): a missing directory
// has git's record of that worktree alone forgotten (never a
// repository-wide `git worktree prune`) and its row archived; otherwise the
// at-risk gate decides: safe means removed (a task's or pool entry's branch
// is deleted, any other branch kept), the row archived and an event
// recorded, and a conflicting task moves to closed (applied and discarded
// stay);
// at risk means kept, with the gate's report stored on the row (an unknown
// worktree gets a row in state "orphan" for it, before anything else) so
// `grove ls --at-risk` shows it. A directory that is not a worktree of a
// known repository is never deleted. Rows are archived, never deleted.
//
// First the pass finishes removals a crash interrupted (ResumeRemovals);
// then it skips every workspace another remover holds (`removing`). A
// task whose close was refused (its last close event is close_refused) is
// looked at again every pass, whatever its state and age: when its
// reasons have cleared (a process that exited), it is closed.
//
// With dryRun nothing is changed or recorded. Errors on one worktree are
// reported on its item (as a git_error reason, the worktree kept) and the
// pass goes on; the returned error is for failures that stop the pass.
func Reap(ctx context.Context, d *Deps, now time.Time, grace time.Duration, dryRun bool) (rep ReapReport, err error) {
	start := time.Now()
	rep = ReapReport{At: now, Grace: grace.String(), DryRun: dryRun, Items: []ReapItem{}}
	defer func() { rep.TookMS = time.Since(start).Milliseconds() }()
	r := &reaper{d: d, now: now, grace: grace, dry: dryRun}
	if !dryRun {
		if _, err := ResumeRemovals(ctx, d); err != nil {
			return rep, err
		}
	}

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
		if w.State == grove.WorkspaceRemoving {
			rep.Items = append(rep.Items, ReapItem{Path: w.Path, Repo: w.RepoPath, TaskID: w.TaskID,
				SessionID: w.SessionID, Owner: "removal in progress", Action: ReapSkippedBusy})
			continue
		}
		owner, gone := ownerGone(w)
		asked := r.closeRefused(ctx, w)
		if gone || asked {
			rep.Items = append(rep.Items, r.row(ctx, w, owner, asked))
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

// closeRefused reports whether w is a task's worktree whose close was
// asked and refused, with nothing since: the request stands, and the
// reaper closes it once the gate lets it go.
func (r *reaper) closeRefused(ctx context.Context, w store.OwnedWorkspace) bool {
	if w.TaskID == "" || w.SessionID != "" || w.AtRisk == "" || !in(w.TaskState, closable...) {
		return false
	}
	ev, err := r.d.Store.LastEventOf(ctx, w.TaskID, "close_asked", "close_refused", "closed", "retry")
	return err == nil && ev.Kind == "close_refused"
}

// row handles a workspace row whose owner is gone, or whose task's close
// was refused (asked: then the grace does not apply and the task closes).
func (r *reaper) row(ctx context.Context, w store.OwnedWorkspace, owner string, asked bool) ReapItem {
	d := r.d
	it := ReapItem{Path: w.Path, Repo: w.RepoPath, TaskID: w.TaskID, SessionID: w.SessionID, Owner: owner}
	_, statErr := os.Lstat(w.Path)
	missing := errors.Is(statErr, fs.ErrNotExist)
	if !missing && !asked {
		idle := r.now.Sub(later(w.LastUsedAt, activity(w.Path)))
		it.IdleSeconds = int64(idle.Seconds())
		if idle < r.grace {
			it.Action = ReapSkippedYoung
			return it
		}
	}
	states := reapable
	if asked {
		states = closable
	}
	rm := d.removalOf(w, states)
	if r.dry {
		return r.dryRun(ctx, it, rm, missing)
	}
	rm.Event = "reaped"
	rm.Message = fmt.Sprintf("worktree removed by the reaper (owner %s)", owner)
	if asked {
		rm.Event, rm.Message = "closed", "worktree removed: the close asked earlier is no longer at risk"
	}
	if missing {
		rm.Event, rm.Message = "reap_pruned", "worktree directory was gone: its git record forgotten, row archived"
	}
	rm.RefusedEvent, rm.RefusedQuiet = "reap_kept", true
	return r.remove(ctx, it, rm, missing)
}

// remove runs Remove for the reaper and turns its answer into the item.
func (r *reaper) remove(ctx context.Context, it ReapItem, rm Removal, missing bool) ReapItem {
	res, err := r.d.Remove(ctx, rm)
	switch {
	case errors.Is(err, grove.ErrAtRisk):
		it.Action, it.Reasons = ReapKept, res.Report.Risks
	case err != nil:
		it.Action, it.Reasons = ReapKept, gitError("remove", err)
		r.recordKept(ctx, rm.Workspace, rm.TaskID, rm.SessionID, it)
	case res.Skipped == SkipBusy:
		it.Action = ReapSkippedBusy
	case res.Skipped != "":
		it.Action = ReapKept
		it.Reasons = []gitops.Risk{{Reason: ReasonOwnerBack, Detail: res.Skipped}}
	case missing:
		it.Action = ReapPruned
	default:
		it.Action = ReapRemoved
	}
	return it
}

// dryRun is what the reaper would do with rm: the gate only.
func (r *reaper) dryRun(ctx context.Context, it ReapItem, rm Removal, missing bool) ReapItem {
	if missing {
		it.Action = ReapWouldPrune
		return it
	}
	repo, err := r.d.Repo(ctx, rm.RepoPath)
	if err != nil {
		it.Action, it.Reasons = ReapKept, gitError("open repository", err)
		return it
	}
	if report := repo.AtRisk(ctx, it.Path, rm.Gate); !report.Safe {
		it.Action, it.Reasons = ReapKept, report.Risks
		return it
	}
	it.Action = ReapWouldRemove
	return it
}

// unknownWorktree handles a worktree of a known repository, under the
// home, that no live row has. It gets a row (state orphan) first, so that
// it is claimed and removed like any other; a row that appeared meanwhile
// (a task or pool entry just made) is its owner's, left alone.
func (r *reaper) unknownWorktree(ctx context.Context, repo *gitops.Repo, row grove.Repo, e gitops.WorktreeEntry) ReapItem {
	d := r.d
	it := ReapItem{Path: e.Path, Repo: row.Path, Owner: "unknown"}
	_, statErr := os.Lstat(e.Path)
	missing := errors.Is(statErr, fs.ErrNotExist)
	seen := activity(e.Path)
	if !missing {
		idle := r.now.Sub(seen)
		it.IdleSeconds = int64(idle.Seconds())
		if idle < r.grace {
			it.Action = ReapSkippedYoung
			return it
		}
	}
	w := store.OwnedWorkspace{Workspace: grove.Workspace{RepoID: row.ID, Path: e.Path, Branch: e.Branch,
		BaseCommit: e.Head, HeadCommit: e.Head, State: WorkspaceOrphan, LastUsedAt: seen}, RepoPath: row.Path}
	rm := d.removalOf(w, nil)
	if r.dry {
		return r.dryRun(ctx, it, rm, missing)
	}
	var adopted grove.Workspace
	if err := d.Store.InTx(ctx, func(tx *store.Tx) (err error) {
		adopted, err = tx.AdoptWorkspace(ctx, w.Workspace)
		return err
	}); err != nil {
		it.Action, it.Reasons = ReapKept, gitError("record unknown worktree", err)
		return it
	}
	if why, _ := unowned(ctx, nil, adopted); why != "" {
		it.Action, it.Reasons = ReapKept, []gitops.Risk{{Reason: ReasonOwnerBack, Detail: why}}
		return it
	}
	rm.Workspace = adopted
	rm.Event = "reaped"
	rm.Message = fmt.Sprintf("unknown worktree %s removed (branch %s kept)", e.Path, e.Branch)
	if missing {
		rm.Event, rm.Message = "reap_pruned", "unknown worktree "+e.Path+" was gone: its git record forgotten"
	}
	rm.RefusedEvent, rm.RefusedQuiet = "reap_kept", true
	return r.remove(ctx, it, rm, missing)
}

// stranger reports a directory under the home that is no worktree of a
// known repository. It is never deleted.
func (r *reaper) stranger(dir string) ReapItem {
	it := ReapItem{Path: dir, Owner: "unknown", Action: ReapKept,
		IdleSeconds: int64(r.now.Sub(activity(dir)).Seconds()),
		Reasons:     []gitops.Risk{{Reason: ReasonNotWorktree, Detail: "not a worktree of a known repository; grove never deletes it"}}}
	if pids, err := procscan.In(dir); err == nil && len(pids) > 0 {
		it.Reasons = append(it.Reasons, gitops.Risk{Reason: gitops.RiskProcess, Detail: fmt.Sprintf("pids %v", pids)})
	}
	return it
}

// recordKept stores the reasons a row's worktree was kept, with an event
// when they changed since the last pass (so a kept worktree does not add
// an event every pass).
func (r *reaper) recordKept(ctx context.Context, w grove.Workspace, taskID, sessionID string, it ReapItem) {
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
		return tx.AddEvent(ctx, taskID, sessionID, "reap_kept", "worktree kept by the reaper, at risk: "+reasonList(it.Reasons))
	})
	if err != nil {
		r.d.Logger.Warn("reap: cannot record refusal", "path", w.Path, "err", err)
	}
	r.d.Logger.Warn("reap: worktree kept", "path", w.Path, "task", taskID, "reasons", reasonList(it.Reasons))
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
