package jobs

import (
	"context"
	"fmt"
	"strings"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
)

// StartRef keeps a session task's start point when the session's worktree
// held changes made outside tasks when the task started (a person's edits,
// files the service wrote): a commit of those changes on top of the
// worktree's HEAD. A task started on a clean worktree has none (its start
// point is HEAD).
func StartRef(taskID string) string { return "refs/grove/starts/" + taskID }

// taskStart is a session task's start point.
type taskStart struct {
	Commit  string // the task's base: HEAD, or the commit of the pending changes
	Pending string // the session_pending message ("" when none)
}

// sessionStart records the worktree's state as the task's start point:
// HEAD when the worktree is clean, otherwise a commit of its files on top
// of HEAD, kept at StartRef (the worktree and its index are not touched).
func (d *Deps) sessionStart(ctx context.Context, repo *gitops.Repo, sess grove.Session, ws grove.Workspace, taskID string) (taskStart, error) {
	msg := fmt.Sprintf("grove: changes made in session %s outside tasks, before task %s\n\n"+
		"Not the work of task %s: they were in the worktree when it started.\n", sess.ID, taskID, taskID)
	st, err := repo.StateOf(ctx, ws.Path, msg)
	if err != nil {
		return taskStart{}, err
	}
	if !st.Changed() {
		return taskStart{Commit: st.Commit}, nil
	}
	if err := repo.SetRef(ctx, StartRef(taskID), st.Commit); err != nil {
		return taskStart{}, err
	}
	grove.Failpoint("session.attach.after-start-point")
	files, err := repo.DiffStat(ctx, st.Head, st.Commit)
	if err != nil {
		return taskStart{}, err
	}
	return taskStart{Commit: st.Commit, Pending: pendingMessage(files, StartRef(taskID))}, nil
}

// pendingMessage names the files changed outside tasks.
func pendingMessage(files []grove.FileChange, ref string) string {
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, f.Status+" "+f.Path)
	}
	shown := names[:min(len(names), 10)]
	more := ""
	if len(names) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(names)-len(shown))
	}
	return fmt.Sprintf("%d file(s) changed in the session outside tasks, not part of this task's diff: %s%s (kept at %s)",
		len(files), strings.Join(shown, ", "), more, ref)
}

// commitSessionStart runs before the diff stage commits a session task's
// worktree. If the task started on changes made outside tasks (StartRef)
// and the branch is still where it was then, the branch moves to that
// start commit (compare-and-swap; worktree and index untouched), so the
// task's commit has it as parent: the person's changes stay in their own
// commit, labelled as such, and the agent's commit holds only its work. If
// the agent moved the branch itself, the history is left as the agent made
// it; the task's diff is taken against the start point either way. It
// returns the start commit of pending changes ("" when there were none).
func (d *Deps) commitSessionStart(ctx context.Context, repo *gitops.Repo, task grove.Task, ws grove.Workspace) (string, error) {
	start, err := repo.RefCommit(ctx, StartRef(task.ID))
	if err != nil || start == "" || start != task.BaseCommit {
		return "", err
	}
	parent, err := repo.RefCommit(ctx, "refs/heads/"+ws.Branch)
	if err != nil {
		return "", err
	}
	head, err := repo.ParentOf(ctx, start)
	if err != nil {
		return "", err
	}
	if parent == head {
		if err := repo.MoveBranch(ctx, ws.Branch, head, start); err != nil {
			return "", err
		}
		grove.Failpoint("session.diff.after-branch-move")
	}
	return start, nil
}
