package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/grove-dev/grove"
)

const wsColumns = `id, repo_id, task_id, session_id, path, branch, base_commit, head_commit, state, at_risk, snapshot_ref, last_used_at, setup_key`

func scanWorkspace(row scanner) (grove.Workspace, error) {
	var (
		w             grove.Workspace
		task, session sql.NullString
		used          int64
	)
	err := row.Scan(&w.ID, &w.RepoID, &task, &session, &w.Path, &w.Branch, &w.BaseCommit, &w.HeadCommit,
		&w.State, &w.AtRisk, &w.SnapshotRef, &used, &w.SetupKey)
	w.TaskID, w.SessionID, w.LastUsedAt = task.String, session.String, fromMS(used)
	return w, err
}

// PutWorkspace records a workspace, or returns the live one already recorded
// at the same path (idempotent for stage retries).
func (t *Tx) PutWorkspace(ctx context.Context, w grove.Workspace) (grove.Workspace, error) {
	existing, err := scanWorkspace(t.q.QueryRowContext(ctx,
		`SELECT `+wsColumns+` FROM workspace WHERE path = ? AND archived_at IS NULL`, w.Path))
	if err == nil {
		return existing, nil
	}
	if err != sql.ErrNoRows {
		return w, fmt.Errorf("find workspace %s: %w", w.Path, err)
	}
	w.LastUsedAt = t.now
	err = t.q.QueryRowContext(ctx, `INSERT INTO workspace(repo_id, task_id, session_id, path, branch, base_commit, state, last_used_at)
		VALUES(?,?,?,?,?,?,?,?) RETURNING id`, w.RepoID, nullString(w.TaskID), nullString(w.SessionID), w.Path, w.Branch,
		w.BaseCommit, w.State, ms(t.now)).Scan(&w.ID)
	if err != nil {
		return w, fmt.Errorf("insert workspace %s: %w", w.Path, err)
	}
	return w, nil
}

// SetWorkspaceState sets a workspace's state and touches last_used_at.
func (t *Tx) SetWorkspaceState(ctx context.Context, id int64, state string) error {
	var cur string
	if err := t.q.QueryRowContext(ctx, `SELECT state FROM workspace WHERE id = ?`, id).Scan(&cur); err != nil {
		return notFound(err, fmt.Sprintf("workspace %d", id))
	}
	if !grove.CanMoveWorkspace(cur, state) {
		return fmt.Errorf("set workspace %d state: no transition from %s to %s: %w", id, cur, state, grove.ErrConflict)
	}
	_, err := t.q.ExecContext(ctx, `UPDATE workspace SET state = ?, last_used_at = ? WHERE id = ?`, state, ms(t.now), id)
	if err != nil {
		return fmt.Errorf("set workspace %d state: %w", id, err)
	}
	return nil
}

// SwapWorkspaceState moves a workspace from state `from` to `to`; ok is
// false (nothing changed) when it is in another state.
func (t *Tx) SwapWorkspaceState(ctx context.Context, id int64, from, to string) (ok bool, err error) {
	if !grove.CanMoveWorkspace(from, to) {
		return false, fmt.Errorf("set workspace %d state: no transition from %s to %s: %w", id, from, to, grove.ErrConflict)
	}
	res, err := t.q.ExecContext(ctx, `UPDATE workspace SET state = ?, last_used_at = ? WHERE id = ? AND state = ?`, to, ms(t.now), id, from)
	if err != nil {
		return false, fmt.Errorf("set workspace %d state: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// SetWorkspaceHead records the workspace's head commit.
func (t *Tx) SetWorkspaceHead(ctx context.Context, id int64, head string) error {
	_, err := t.q.ExecContext(ctx, `UPDATE workspace SET head_commit = ?, last_used_at = ? WHERE id = ?`, head, ms(t.now), id)
	if err != nil {
		return fmt.Errorf("set workspace %d head: %w", id, err)
	}
	return nil
}

// SetWorkspaceRisk records the at-risk report (JSON) of the last refused
// removal; "" clears it.
func (t *Tx) SetWorkspaceRisk(ctx context.Context, id int64, report string) error {
	_, err := t.q.ExecContext(ctx, `UPDATE workspace SET at_risk = ? WHERE id = ?`, report, id)
	if err != nil {
		return fmt.Errorf("set workspace %d risk: %w", id, err)
	}
	return nil
}

// SetWorkspaceSnapshot records the snapshot ref taken before a forced removal.
func (t *Tx) SetWorkspaceSnapshot(ctx context.Context, id int64, ref string) error {
	_, err := t.q.ExecContext(ctx, `UPDATE workspace SET snapshot_ref = ? WHERE id = ?`, ref, id)
	if err != nil {
		return fmt.Errorf("set workspace %d snapshot: %w", id, err)
	}
	return nil
}

// ArchiveWorkspace marks a workspace removed and archived. The row stays.
func (t *Tx) ArchiveWorkspace(ctx context.Context, id int64) error {
	_, err := t.q.ExecContext(ctx, `UPDATE workspace SET state = ?, archived_at = ? WHERE id = ?`,
		grove.WorkspaceRemoved, ms(t.now), id)
	if err != nil {
		return fmt.Errorf("archive workspace %d: %w", id, err)
	}
	return nil
}

// TaskWorkspace is the non-transactional TaskWorkspace.
func (s *Store) TaskWorkspace(ctx context.Context, taskID string) (grove.Workspace, error) {
	return s.view().TaskWorkspace(ctx, taskID)
}

// TaskWorkspace returns the newest workspace of a task (archived or not);
// for a session's task, the session's live workspace.
func (t *Tx) TaskWorkspace(ctx context.Context, taskID string) (grove.Workspace, error) {
	w, err := scanWorkspace(t.q.QueryRowContext(ctx,
		`SELECT `+wsColumns+` FROM workspace WHERE task_id = ?1 OR (task_id IS NULL AND archived_at IS NULL
		AND session_id = (SELECT session_id FROM task WHERE id = ?1)) ORDER BY id DESC LIMIT 1`, taskID))
	if err != nil {
		return w, notFound(err, "workspace of task "+taskID)
	}
	return w, nil
}

// LiveWorkspaces lists workspaces that are not archived.
func (s *Store) LiveWorkspaces(ctx context.Context) ([]grove.Workspace, error) {
	and, args := s.hostAnd("(SELECT host FROM repo WHERE repo.id = workspace.repo_id)")
	rows, err := s.q.QueryContext(ctx, `SELECT `+wsColumns+` FROM workspace WHERE archived_at IS NULL`+and+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	defer rows.Close()
	var out []grove.Workspace
	for rows.Next() {
		w, err := scanWorkspace(rows)
		if err != nil {
			return nil, fmt.Errorf("scan workspace: %w", err)
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// Workspace reads one workspace row by id; archived reports whether it was
// archived (its worktree removed). ErrNotFound when there is no such row.
func (t *Tx) Workspace(ctx context.Context, id int64) (w grove.Workspace, archived bool, err error) {
	var at sql.NullInt64
	var (
		task, session sql.NullString
		used          int64
	)
	err = t.q.QueryRowContext(ctx, `SELECT `+wsColumns+`, archived_at FROM workspace WHERE id = ?`, id).Scan(
		&w.ID, &w.RepoID, &task, &session, &w.Path, &w.Branch, &w.BaseCommit, &w.HeadCommit,
		&w.State, &w.AtRisk, &w.SnapshotRef, &used, &w.SetupKey, &at)
	if err != nil {
		return w, false, notFound(err, fmt.Sprintf("workspace %d", id))
	}
	w.TaskID, w.SessionID, w.LastUsedAt = task.String, session.String, fromMS(used)
	return w, at.Valid, nil
}
