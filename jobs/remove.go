package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// Removal is one worktree for Remove to take away: a live workspace row and
// what its owner wants done.
type Removal struct {
	// Workspace is the row; only its ID counts (Remove reads the row again
	// in its claim transaction).
	Workspace grove.Workspace
	RepoPath  string
	// Gate are the at-risk gate's options; Gate.Branch is the branch the
	// gate judges.
	Gate gitops.GateOptions
	// DeleteBranch deletes Gate.Branch with the worktree (a task's, a
	// session's or a pool entry's branch); false keeps every branch.
	DeleteBranch bool
	// Force snapshots an at-risk worktree to SnapshotRef before removing it.
	Force       bool
	SnapshotRef string
	// DropIgnored leaves ignored files out of the forced snapshot (the
	// explicit way past the snapshot's size limit; nested repositories are
	// still recorded whole).
	DropIgnored bool
	// Owner re-checks, in the claim transaction, that the row's owner still
	// lets the worktree go; a non-empty answer says why not and nothing is
	// done. nil: no owner to ask.
	Owner func(ctx context.Context, tx *store.Tx, ws grove.Workspace) (string, error)
	// Done runs in the archive transaction (a task moves to closed, a
	// session to closed, ...). nil: nothing more.
	Done func(ctx context.Context, tx *store.Tx) error
	// RefusedState is the state a refused removal leaves the row in; ""
	// means the state it had before the claim (ReleaseTo when that is
	// unknown: a claim resumed after a crash).
	RefusedState string
	// ReleaseTo is the state a refused or failed resumed removal returns
	// the row to; "" means ready.
	ReleaseTo string
	// Wait makes Remove wait (until ctx ends) while another remover holds
	// the workspace, instead of skipping it.
	Wait bool
	// Events: who they are about, the kind and message recorded on success
	// (the message gets "; snapshot at <ref>" after a forced removal) and
	// the kind recorded on a refusal.
	TaskID, SessionID string
	Event, Message    string
	RefusedEvent      string
	// RefusedQuiet records the refusal event only when the report differs
	// from the one already on the row (a reaper pass every few minutes
	// must not add an event each time).
	RefusedQuiet bool
}

// RemoveResult says what Remove did.
type RemoveResult struct {
	// Removed: the worktree is gone and the row archived (by this call).
	Removed bool
	// Skipped says why nothing was done: the row was already archived
	// (SkipGone), another remover holds it (SkipBusy), or the owner
	// refused (its answer).
	Skipped string
	// Report is the gate's report (zero when the gate did not run).
	Report gitops.Report
	// Snapshot is the ref taken before a forced removal.
	Snapshot string
	// Resumed: the row was already claimed by a remover that died.
	Resumed bool
	// Trash is the trash entry that keeps the removed worktree (its Dir is
	// "" when nothing could be kept: Trash.NotKept says why).
	Trash gitops.TrashEntry
}

// RiskSnapshotRefused is the reason a forced removal records when the
// snapshot it must take first refuses (over its size limit: --drop-ignored
// leaves ignored files out; a worktree moved away: git worktree repair).
const RiskSnapshotRefused = "snapshot_refused"

// Reasons Remove skips a workspace.
const (
	SkipGone = "already removed"
	SkipBusy = "being removed"
)

// Remove is the one removal path for a worktree grove recorded: task
// close, the reaper (task rows, session rows, unknown worktrees it adopted,
// stale pool entries), session close and the pool shrink all go through
// it, and it is the only caller of gitops.Repo.Retire. Its contract:
//
//  1. Claim. It takes the workspace's removal lock (a flock on
//     $GROVE_HOME/removing/<id>.lock, held until it returns; a crash
//     releases it), then in one transaction reads the row again, asks
//     r.Owner whether the owner still lets it go, and moves the row to
//     `removing` with a compare-and-swap on its state. A row already
//     `removing` whose lock was free was left by a remover that died: the
//     removal resumes (idempotently). A row another remover holds is
//     skipped (SkipBusy; with r.Wait, waited for), an archived one too
//     (SkipGone). While a row is `removing` nothing else uses it: the
//     reaper skips it, a retry refuses, a pool claim cannot take it.
//  2. Gate. The at-risk gate runs on the worktree. A report that is not
//     safe (other than a missing directory, which removal then only
//     forgets) is a refusal, unless r.Force: then a snapshot is taken to
//     r.SnapshotRef and recorded on the row first.
//  3. Retire. gitops.Repo.Retire moves the worktree into the trash,
//     re-checks it there, unregisters that worktree alone (never a
//     repository-wide prune) and deletes the branch (r.DeleteBranch).
//  4. Archive. In one transaction the row is archived, its at-risk report
//     cleared, r.Done run and r.Event recorded.
//
// On a refusal (the gate, or RetireWorktree's re-check) the report is
// recorded on the row with an r.RefusedEvent event, the claim released
// (the row back to its previous state, or r.RefusedState), and the error
// is a *grove.UserError wrapping grove.ErrAtRisk naming the reasons. Any
// other failure releases the claim and returns the error; the worktree is
// as RetireWorktree left it (intact, or gone with its branch kept), and a
// new call finishes the job. A crash at any step leaves the row
// `removing` for the next call (the reaper's pass, the close job River
// runs again) to resume.
//
// Failpoints: close.after-claim, close.after-gate, close.after-snapshot,
// close.after-retire, close.before-archive.
func (d *Deps) Remove(ctx context.Context, r Removal) (RemoveResult, error) {
	var res RemoveResult
	unlock, ok, err := d.lockRemoval(ctx, r.Workspace.ID, r.Wait)
	if err != nil {
		return res, err
	}
	if !ok {
		res.Skipped = SkipBusy
		return res, nil
	}
	removed := false
	defer func() { unlock(removed) }()

	ws, prev, skip, err := d.claimRemoval(ctx, r)
	if err != nil || skip != "" {
		res.Skipped = skip
		return res, err
	}
	res.Resumed = prev == ""
	if prev == "" {
		prev = r.ReleaseTo
		if prev == "" {
			prev = grove.WorkspaceReady
		}
	}
	grove.Failpoint("close.after-claim")

	repo, err := d.Repo(ctx, r.RepoPath)
	if err != nil {
		return res, d.releaseRemoval(ctx, ws.ID, prev, fmt.Errorf("open repository %s: %w", r.RepoPath, err))
	}
	gate := r.Gate
	gate.RefreshIndex = true // about to go: RetireWorktree's re-check is then cheap
	report := repo.AtRisk(ctx, ws.Path, gate)
	if r.Wait {
		report = settleProcesses(ctx, repo, ws.Path, gate, report)
	}
	res.Report = report
	grove.Failpoint("close.after-gate")
	if !report.Safe && !alreadyGone(report) {
		if !r.Force {
			return res, d.refuseRemoval(ctx, r, ws, prev, report)
		}
		ref := r.SnapshotRef
		if _, err := repo.SnapshotWith(ctx, ws.Path, ref, gitops.SnapshotOptions{DropIgnored: r.DropIgnored}); err != nil {
			if errors.Is(err, grove.ErrAtRisk) {
				// The snapshot cannot hold it (over the size limit, moved
				// away, a file it cannot store): a refusal, not a retry.
				report.Risks = append(report.Risks, gitops.Risk{Reason: RiskSnapshotRefused, Detail: err.Error()})
				res.Report = report
				return res, d.refuseRemoval(ctx, r, ws, prev, report)
			}
			return res, d.releaseRemoval(ctx, ws.ID, prev, fmt.Errorf("snapshot %s before forced removal: %w", ws.Path, err))
		}
		if err := d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.SetWorkspaceSnapshot(ctx, ws.ID, ref) }); err != nil {
			return res, d.releaseRemoval(ctx, ws.ID, prev, err)
		}
		res.Snapshot = ref
		grove.Failpoint("close.after-snapshot")
	}

	branch := ""
	if r.DeleteBranch {
		branch = r.Gate.Branch
	}
	opt := gitops.RetireOptions{Force: res.Snapshot != "",
		Manifest: gitops.TrashManifest{Task: r.TaskID, Session: r.SessionID, Reason: r.Event}}
	entry, err := repo.Retire(ctx, ws.Path, branch, d.TrashDir(), report, opt)
	if err != nil {
		if errors.Is(err, grove.ErrAtRisk) && !r.Force {
			// Work appeared after the gate ran: kept, and said so.
			again := repo.AtRisk(ctx, ws.Path, r.Gate)
			if again.Safe {
				again.Safe, again.Risks = false, []gitops.Risk{{Reason: gitops.RiskGitError, Detail: err.Error()}}
			}
			res.Report = again
			return res, d.refuseRemoval(ctx, r, ws, prev, again)
		}
		return res, d.releaseRemoval(ctx, ws.ID, prev, fmt.Errorf("remove worktree %s: %w", ws.Path, err))
	}
	res.Trash = entry
	grove.Failpoint("close.after-retire")

	grove.Failpoint("close.before-archive")
	msg := r.Message
	if res.Snapshot != "" {
		msg += "; snapshot at " + res.Snapshot
	}
	if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetWorkspaceRisk(ctx, ws.ID, ""); err != nil {
			return err
		}
		if err := tx.ArchiveWorkspace(ctx, ws.ID); err != nil {
			return err
		}
		if r.Done != nil {
			if err := r.Done(ctx, tx); err != nil {
				return err
			}
		}
		if r.Event == "" {
			return nil
		}
		return tx.AddEvent(ctx, r.TaskID, r.SessionID, r.Event, msg)
	}); err != nil {
		return res, fmt.Errorf("archive workspace %d: %w", ws.ID, err)
	}
	res.Removed, removed = true, true
	d.Logger.Info("worktree removed", "path", ws.Path, "task", r.TaskID, "session", r.SessionID, "event", r.Event)
	return res, nil
}

// claimRemoval is Remove's claim transaction. prev is the row's state
// before the claim, "" when it was already `removing` (resumed).
func (d *Deps) claimRemoval(ctx context.Context, r Removal) (ws grove.Workspace, prev, skip string, err error) {
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		cur, archived, err := tx.Workspace(ctx, r.Workspace.ID)
		if err != nil {
			return err
		}
		ws = cur
		if archived || cur.State == grove.WorkspaceRemoved {
			skip = SkipGone
			return nil
		}
		if r.Owner != nil {
			why, err := r.Owner(ctx, tx, cur)
			if err != nil || why != "" {
				skip = why
				return err
			}
		}
		if cur.State == grove.WorkspaceRemoving {
			return nil // a remover died holding it: resume
		}
		ok, err := tx.SwapWorkspaceState(ctx, cur.ID, cur.State, grove.WorkspaceRemoving)
		if err != nil {
			return err
		}
		if !ok {
			skip = "workspace changed"
			return nil
		}
		prev = cur.State
		return nil
	})
	if err != nil {
		return ws, "", "", fmt.Errorf("claim workspace %d for removal: %w", r.Workspace.ID, err)
	}
	return ws, prev, skip, nil
}

// releaseRemoval gives a claimed row back (state prev) after a failure and
// returns cause (joined with any error releasing it).
func (d *Deps) releaseRemoval(ctx context.Context, id int64, prev string, cause error) error {
	err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.SwapWorkspaceState(ctx, id, grove.WorkspaceRemoving, prev)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w; and releasing workspace %d: %v", cause, id, err)
	}
	return cause
}

// refuseRemoval records a refusal (report on the row, an event), releases
// the claim and returns the refusal as a *grove.UserError (ErrAtRisk).
func (d *Deps) refuseRemoval(ctx context.Context, r Removal, ws grove.Workspace, prev string, report gitops.Report) error {
	to := r.RefusedState
	if to == "" {
		to = prev
	}
	reasons := riskReasons(report.Risks)
	d.Logger.Warn("removal refused", "path", ws.Path, "task", r.TaskID, "session", r.SessionID, "reasons", reasons)
	err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetWorkspaceRisk(ctx, ws.ID, reportJSON(report)); err != nil {
			return err
		}
		if _, err := tx.SwapWorkspaceState(ctx, ws.ID, grove.WorkspaceRemoving, to); err != nil {
			return err
		}
		if r.RefusedEvent == "" || (r.RefusedQuiet && reportJSON(report) == ws.AtRisk) {
			return nil
		}
		return tx.AddEvent(ctx, r.TaskID, r.SessionID, r.RefusedEvent, "worktree kept, at risk: "+reasonList(report.Risks))
	})
	if err != nil {
		return fmt.Errorf("record refusal for %s: %w", ws.Path, err)
	}
	return grove.Userf(grove.ErrAtRisk, "apply or discard its work, or remove it with --force (snapshots first)",
		"worktree %s holds work: %s", ws.Path, reasons)
}

// riskReasons is "reason (detail); reason" for an error message.
func riskReasons(risks []gitops.Risk) string {
	s := make([]string, 0, len(risks))
	for _, r := range risks {
		if r.Detail != "" {
			s = append(s, r.Reason+" ("+r.Detail+")")
		} else {
			s = append(s, r.Reason)
		}
	}
	return strings.Join(s, "; ")
}

// lockRemoval takes workspace id's removal lock (see Remove). ok is false
// when another remover holds it and wait is false. unlock(true), once the
// row is archived, also deletes the lock file.
func (d *Deps) lockRemoval(ctx context.Context, id int64, wait bool) (unlock func(done bool), ok bool, err error) {
	dir := filepath.Join(d.Home, "removing")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("removal lock: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%d.lock", id))
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, false, fmt.Errorf("removal lock: %w", err)
		}
		locked, err := grove.TryFlock(f, unix.LOCK_EX)
		if locked {
			// The file may have been unlinked by the remover that held it
			// (it deletes it when done): lock the one at the path.
			if fi, serr := os.Stat(path); serr == nil && sameFile(f, fi) {
				return func(done bool) {
					if done {
						_ = os.Remove(path) // a remover that opened it re-checks the path
					}
					f.Close()
				}, true, nil
			}
			f.Close()
			continue
		}
		f.Close()
		if err != nil {
			return nil, false, fmt.Errorf("removal lock %s: %w", path, err)
		}
		if !wait {
			return nil, false, nil
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, false, err
		}
	}
}

func sameFile(f *os.File, fi os.FileInfo) bool {
	mine, err := f.Stat()
	return err == nil && os.SameFile(mine, fi)
}

// removalOf is the Removal of a live workspace row by its owner: a task's
// (not a session's) worktree is closed with its branch and the task moves
// to closed (from applied, discarded, review or conflict); a session's is
// removed with its branch and the session closed; any other row (stale pool
// entry, orphan) is removed keeping its branch unless it is a pool entry's.
// taskStates are the task states the owner check accepts.
func (d *Deps) removalOf(w store.OwnedWorkspace, taskStates []grove.TaskState) Removal {
	r := Removal{Workspace: w.Workspace, RepoPath: w.RepoPath, TaskID: w.TaskID, SessionID: w.SessionID,
		RefusedEvent: "reap_kept"}
	switch {
	case w.TaskID != "" && w.SessionID == "":
		r.Gate = GateOptions(grove.Task{ID: w.TaskID, State: w.TaskState}, w.Workspace)
		r.DeleteBranch = true
		r.SnapshotRef = SnapshotRef(w.TaskID)
		id := w.TaskID
		r.Owner = func(ctx context.Context, tx *store.Tx, ws grove.Workspace) (string, error) {
			t, err := tx.Task(ctx, id)
			if err != nil {
				return "", err
			}
			if !in(t.State, taskStates...) {
				return fmt.Sprintf("%s: task is %s", ReasonOwnerBack, t.State), nil
			}
			return "", nil
		}
		r.Done = func(ctx context.Context, tx *store.Tx) error { return closeTaskTx(ctx, tx, id) }
	case w.SessionID != "":
		key := w.SessionID
		r.Gate = gitops.GateOptions{Branch: w.Branch}
		r.DeleteBranch = true
		r.SnapshotRef = "refs/grove/snapshots/session-" + key
		r.Owner = func(ctx context.Context, tx *store.Tx, ws grove.Workspace) (string, error) {
			busy, err := tx.SessionBusy(ctx, key, "", false)
			if err != nil || busy {
				return map[bool]string{true: ReasonOwnerBack + ": session has a task in progress"}[busy], err
			}
			return "", nil
		}
		r.Done = func(ctx context.Context, tx *store.Tx) error { return closeSessionTx(ctx, tx, key) }
	default:
		r.Gate = gitops.GateOptions{Branch: w.Branch}
		r.DeleteBranch = strings.HasPrefix(w.Branch, "grove/pool/")
		if !r.DeleteBranch {
			r.Gate = gitops.GateOptions{} // not ours: its branch is kept
		}
		r.Owner = unowned
		r.ReleaseTo = w.State
		if w.State == grove.WorkspaceRemoving {
			r.ReleaseTo = grove.WorkspaceStale
		}
	}
	return r
}

// unowned is the owner check of a row without a task or session: it must
// still have none and not be a pool entry the pool may hand out.
func unowned(_ context.Context, _ *store.Tx, ws grove.Workspace) (string, error) {
	switch {
	case ws.TaskID != "" || ws.SessionID != "":
		return ReasonOwnerBack + ": the worktree was taken", nil
	case ws.State == grove.WorkspacePool || ws.State == grove.WorkspacePoolCreating ||
		ws.State == grove.WorkspacePoolMoving || ws.State == grove.WorkspaceClaiming:
		return ReasonOwnerBack + ": the warm pool owns it", nil
	}
	return "", nil
}

// closeTaskTx moves a task whose worktree is gone to closed, from applied,
// discarded, review or conflict (failed and canceled keep their state).
func closeTaskTx(ctx context.Context, tx *store.Tx, id string) error {
	t, err := tx.Task(ctx, id)
	if err != nil {
		return err
	}
	if in(t.State, grove.StateApplied, grove.StateDiscarded, grove.StateReview, grove.StateConflict) {
		_, err = tx.SetState(ctx, id, []grove.TaskState{t.State}, grove.StateClosed, "")
	}
	return err
}

// closeSessionTx marks a session whose worktree is gone closed and frees
// its port.
func closeSessionTx(ctx context.Context, tx *store.Tx, key string) error {
	if err := tx.ReleasePort(ctx, key); err != nil {
		return err
	}
	return tx.SetSessionState(ctx, key, grove.SessionClosed, true)
}

// ResumeRemovals finishes every removal a crash interrupted: each row left
// `removing` whose remover is gone goes through Remove again (a refusal
// puts it back, kept and reported). Rows a live remover holds are left to
// it. The daemon calls it at start; every reaper pass does too.
func ResumeRemovals(ctx context.Context, d *Deps) (resumed int, err error) {
	rows, err := d.Store.OwnedWorkspaces(ctx)
	if err != nil {
		return 0, err
	}
	for _, w := range rows {
		if w.State != grove.WorkspaceRemoving {
			continue
		}
		if ctx.Err() != nil {
			return resumed, ctx.Err()
		}
		r := d.removalOf(w, closable)
		r.Event, r.Message, r.RefusedEvent = "closed", "worktree removed (a removal interrupted by a crash, resumed)", "close_refused"
		if w.SessionID != "" {
			r.Event = "session_closed"
		}
		res, err := d.Remove(ctx, r)
		switch {
		case errors.Is(err, grove.ErrAtRisk):
			d.Logger.Warn("interrupted removal refused on resume", "path", w.Path, "err", err)
		case err != nil:
			d.Logger.Warn("interrupted removal not resumed", "path", w.Path, "err", err)
		case res.Removed:
			resumed++
		}
	}
	return resumed, nil
}

// processGrace is how long a close waits for processes that are the only
// reason its worktree is at risk: an agent's supervisor sweeping its group,
// a git command finishing, exit in a moment, and a close refused for them
// would wait for the next reaper pass.
const processGrace = 5 * time.Second

// settleProcesses runs the gate again, with a growing pause, while the
// only risk it finds is live processes, for up to processGrace; it
// returns the last report. Waiting changes nothing on disk.
func settleProcesses(ctx context.Context, repo *gitops.Repo, path string, gate gitops.GateOptions, rep gitops.Report) gitops.Report {
	pause := 50 * time.Millisecond
	for end := time.Now().Add(processGrace); !rep.Safe && onlyProcesses(rep) && time.Now().Before(end); pause = min(2*pause, time.Second) {
		if sleepCtx(ctx, pause) != nil {
			return rep
		}
		rep = repo.AtRisk(ctx, path, gate)
	}
	return rep
}

// onlyProcesses reports whether every risk in rep is a live process.
func onlyProcesses(rep gitops.Report) bool {
	for _, r := range rep.Risks {
		if r.Reason != gitops.RiskProcess {
			return false
		}
	}
	return len(rep.Risks) > 0
}
