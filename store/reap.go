package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/grove-dev/grove"
)

// OwnedWorkspace is a live workspace with its repository and the state of
// its owner, for the reaper and `grove ls --at-risk`.
type OwnedWorkspace struct {
	grove.Workspace
	RepoPath      string          `json:"repo"`
	RepoCommonDir string          `json:"-"`
	TaskState     grove.TaskState `json:"task_state,omitempty"`    // "" without a task
	SessionState  string          `json:"session_state,omitempty"` // "" without a session
}

const ownedColumns = `w.id, w.repo_id, w.task_id, w.session_id, w.path, w.branch, w.base_commit, w.head_commit,
	w.state, w.at_risk, w.snapshot_ref, w.last_used_at, r.path, r.common_dir, COALESCE(t.state, ''), COALESCE(s.state, '')`

const ownedFrom = ` FROM workspace w JOIN repo r ON r.id = w.repo_id
	LEFT JOIN task t ON t.id = w.task_id LEFT JOIN session s ON s.id = w.session_id
	WHERE w.archived_at IS NULL`

func (s *Store) ownedWorkspaces(ctx context.Context, where string) ([]OwnedWorkspace, error) {
	and, args := s.hostAnd("r.host")
	rows, err := s.q.QueryContext(ctx, `SELECT `+ownedColumns+ownedFrom+where+and+` ORDER BY w.id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []OwnedWorkspace
	for rows.Next() {
		var (
			o             OwnedWorkspace
			task, session sql.NullString
			used          int64
			taskState     string
		)
		if err := rows.Scan(&o.ID, &o.RepoID, &task, &session, &o.Path, &o.Branch, &o.BaseCommit, &o.HeadCommit,
			&o.State, &o.AtRisk, &o.SnapshotRef, &used, &o.RepoPath, &o.RepoCommonDir, &taskState, &o.SessionState); err != nil {
			return nil, fmt.Errorf("scan workspace: %w", err)
		}
		o.TaskID, o.SessionID, o.LastUsedAt = task.String, session.String, fromMS(used)
		o.TaskState = grove.TaskState(taskState)
		out = append(out, o)
	}
	return out, rows.Err()
}

// OwnedWorkspaces lists every live (not archived) workspace with its
// repository and owner states, oldest first.
func (s *Store) OwnedWorkspaces(ctx context.Context) ([]OwnedWorkspace, error) {
	out, err := s.ownedWorkspaces(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	return out, nil
}

// AtRiskWorkspaces lists live workspaces that carry an at-risk report (a
// refused close or reap), oldest first.
func (s *Store) AtRiskWorkspaces(ctx context.Context) ([]OwnedWorkspace, error) {
	out, err := s.ownedWorkspaces(ctx, ` AND w.at_risk <> ''`)
	if err != nil {
		return nil, fmt.Errorf("list at-risk workspaces: %w", err)
	}
	return out, nil
}

// AdoptWorkspace records a worktree grove found on disk but had no row for
// (no task, no session), keeping w.LastUsedAt, w.State and w.AtRisk as
// given. If a live row already has that path, that row is returned and
// nothing changes.
func (t *Tx) AdoptWorkspace(ctx context.Context, w grove.Workspace) (grove.Workspace, error) {
	existing, err := scanWorkspace(t.q.QueryRowContext(ctx,
		`SELECT `+wsColumns+` FROM workspace WHERE path = ? AND archived_at IS NULL`, w.Path))
	if err == nil {
		return existing, nil
	}
	if err != sql.ErrNoRows {
		return w, fmt.Errorf("find workspace %s: %w", w.Path, err)
	}
	err = t.q.QueryRowContext(ctx, `INSERT INTO workspace(repo_id, path, branch, base_commit, head_commit, state, at_risk, last_used_at)
		VALUES(?,?,?,?,?,?,?,?) RETURNING id`, w.RepoID, w.Path, w.Branch, w.BaseCommit, w.HeadCommit, w.State, w.AtRisk,
		ms(w.LastUsedAt)).Scan(&w.ID)
	if err != nil {
		return w, fmt.Errorf("adopt workspace %s: %w", w.Path, err)
	}
	return w, nil
}

// LastEventOf is the newest event of a task among the given kinds;
// ErrNotFound when it has none of them.
func (s *Store) LastEventOf(ctx context.Context, taskID string, kinds ...string) (grove.Event, error) {
	if len(kinds) == 0 {
		return grove.Event{}, fmt.Errorf("last event of %s: no kinds", taskID)
	}
	args := []any{taskID}
	marks := ""
	for i, k := range kinds {
		if i > 0 {
			marks += ","
		}
		marks += "?"
		args = append(args, k)
	}
	evs, err := s.events(ctx, `id = (SELECT MAX(id) FROM event WHERE task_id = ? AND kind IN (`+marks+`))`, args...)
	if err != nil {
		return grove.Event{}, err
	}
	if len(evs) == 0 {
		return grove.Event{}, fmt.Errorf("event of task %s: %w", taskID, grove.ErrNotFound)
	}
	return evs[0], nil
}

// LastEventID is the id of a task's newest event (0 without any).
func (s *Store) LastEventID(ctx context.Context, taskID string) (int64, error) {
	var id sql.NullInt64
	if err := s.q.QueryRowContext(ctx, `SELECT MAX(id) FROM event WHERE task_id = ?`, taskID).Scan(&id); err != nil {
		return 0, fmt.Errorf("last event of %s: %w", taskID, err)
	}
	return id.Int64, nil
}
