package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/grove-dev/grove"
)

// PoolEntries lists a repository's warm-pool workspaces that belong to the
// pool: ready, being created, or being moved (not stale ones, not claimed).
func (s *Store) PoolEntries(ctx context.Context, repoID int64) ([]grove.Workspace, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT `+wsColumns+` FROM workspace WHERE repo_id = ? AND task_id IS NULL
		AND session_id IS NULL AND state IN ('pool', 'pool_creating', 'pool_moving') AND archived_at IS NULL ORDER BY id`, repoID)
	if err != nil {
		return nil, fmt.Errorf("list pool of repo %d: %w", repoID, err)
	}
	defer rows.Close()
	var out []grove.Workspace
	for rows.Next() {
		w, err := scanWorkspace(rows)
		if err != nil {
			return nil, fmt.Errorf("scan pool entry: %w", err)
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// PoolSummary is one repository's warm pool: entries by state, and the
// ready ones by the commit they are at.
type PoolSummary struct {
	RepoID   int64          `json:"repo_id"`
	Repo     string         `json:"repo"`
	Ready    int            `json:"ready"`
	Creating int            `json:"creating"`
	Moving   int            `json:"moving"`
	Stale    int            `json:"stale"`
	ReadyAt  map[string]int `json:"ready_at"` // commit -> ready entries there
	// SetUp counts the ready entries whose setup (.grove.toml) completed
	// (under some key: a claim at another commit may still run setup).
	SetUp int `json:"set_up"`
}

// PoolSummaries lists the warm pool of every repository that has one
// (stale entries count until they are removed).
func (s *Store) PoolSummaries(ctx context.Context) ([]PoolSummary, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT w.repo_id, r.path, w.state, w.base_commit, COUNT(*), SUM(CASE WHEN w.setup_key <> '' THEN 1 ELSE 0 END) FROM workspace w
		JOIN repo r ON r.id = w.repo_id WHERE w.task_id IS NULL AND w.session_id IS NULL AND w.archived_at IS NULL
		AND w.state IN ('pool', 'pool_creating', 'pool_moving', 'stale') GROUP BY 1, 2, 3, 4 ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("summarize pools: %w", err)
	}
	defer rows.Close()
	var out []PoolSummary
	for rows.Next() {
		var (
			id          int64
			path, state string
			commit      string
			n, setUp    int
		)
		if err := rows.Scan(&id, &path, &state, &commit, &n, &setUp); err != nil {
			return nil, fmt.Errorf("scan pool summary: %w", err)
		}
		if len(out) == 0 || out[len(out)-1].RepoID != id {
			out = append(out, PoolSummary{RepoID: id, Repo: path, ReadyAt: map[string]int{}})
		}
		p := &out[len(out)-1]
		switch state {
		case grove.WorkspacePool:
			p.Ready += n
			p.ReadyAt[commit] += n
			p.SetUp += setUp
		case grove.WorkspacePoolCreating:
			p.Creating += n
		case grove.WorkspacePoolMoving:
			p.Moving += n
		case grove.WorkspaceStale:
			p.Stale += n
		}
	}
	return out, rows.Err()
}

// CountPoolSetUp counts ready warm-pool worktrees whose setup completed.
func (s *Store) CountPoolSetUp(ctx context.Context) (int, error) {
	var n int
	err := s.q.QueryRowContext(ctx, `SELECT COUNT(*) FROM workspace WHERE state = 'pool' AND setup_key <> '' AND archived_at IS NULL`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count set-up pool entries: %w", err)
	}
	return n, nil
}

// CountPool counts ready warm-pool worktrees per repository.
func (s *Store) CountPool(ctx context.Context) (int, error) {
	var n int
	err := s.q.QueryRowContext(ctx, `SELECT COUNT(*) FROM workspace WHERE state = 'pool' AND archived_at IS NULL`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count pool: %w", err)
	}
	return n, nil
}

// ClaimPoolEntry gives task taskID a ready pool worktree of repoID, one at
// commit if there is one, else any (the caller moves it to commit): the
// row becomes the task's (state claiming until its branch is renamed). ok
// is false when none is ready.
func (t *Tx) ClaimPoolEntry(ctx context.Context, repoID int64, commit, taskID string) (w grove.Workspace, ok bool, err error) {
	w, err = scanWorkspace(t.q.QueryRowContext(ctx, `SELECT `+wsColumns+` FROM workspace WHERE repo_id = ? AND task_id IS NULL
		AND session_id IS NULL AND state = 'pool' AND archived_at IS NULL ORDER BY base_commit = ? DESC, id LIMIT 1`, repoID, commit))
	if errors.Is(err, sql.ErrNoRows) {
		return w, false, nil
	}
	if err != nil {
		return w, false, fmt.Errorf("find pool entry: %w", err)
	}
	if _, err := t.q.ExecContext(ctx, `UPDATE workspace SET task_id = ?, state = ?, last_used_at = ? WHERE id = ?`,
		taskID, grove.WorkspaceClaiming, ms(t.now), w.ID); err != nil {
		return w, false, fmt.Errorf("claim pool entry %d: %w", w.ID, err)
	}
	w.TaskID, w.State = taskID, grove.WorkspaceClaiming
	return w, true, nil
}

// TakePoolEntry reserves an unclaimed pool entry for a pool pass (state
// pool_moving: no task can claim it meanwhile). ok is false when a task
// claimed it first. Only one pass per repository runs at a time, so an
// entry a crashed pass left pool_moving or pool_creating is taken again.
func (t *Tx) TakePoolEntry(ctx context.Context, id int64) (ok bool, err error) {
	res, err := t.q.ExecContext(ctx, `UPDATE workspace SET state = ? WHERE id = ? AND task_id IS NULL AND archived_at IS NULL
		AND state IN ('pool', 'pool_creating', 'pool_moving')`, grove.WorkspacePoolMoving, id)
	if err != nil {
		return false, fmt.Errorf("take pool entry %d: %w", id, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// ReturnPoolEntry ends a pool pass's work on an entry it took: the entry
// is at base on branch, in state (pool, or stale when it was found dirty).
func (t *Tx) ReturnPoolEntry(ctx context.Context, id int64, branch, base, state string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE workspace SET branch = ?, base_commit = ?, state = ?, last_used_at = ?
		WHERE id = ? AND state = ?`, branch, base, state, ms(t.now), id, grove.WorkspacePoolMoving); err != nil {
		return fmt.Errorf("return pool entry %d: %w", id, err)
	}
	return nil
}

// ReleasePoolEntry undoes a claim: the worktree goes back to the pool in
// state (pool, or stale when it turned out dirty).
func (t *Tx) ReleasePoolEntry(ctx context.Context, id int64, state string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE workspace SET task_id = NULL, state = ? WHERE id = ?`, state, id); err != nil {
		return fmt.Errorf("release pool entry %d: %w", id, err)
	}
	return nil
}

// SetWorkspaceBranch records a workspace's branch and base commit.
func (t *Tx) SetWorkspaceBranch(ctx context.Context, id int64, branch, base string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE workspace SET branch = ?, base_commit = ?, last_used_at = ? WHERE id = ?`,
		branch, base, ms(t.now), id); err != nil {
		return fmt.Errorf("set workspace %d branch: %w", id, err)
	}
	return nil
}

// SetSetupKey records that workspace id's setup completed under key ("":
// its setup is no longer known to hold).
func (t *Tx) SetSetupKey(ctx context.Context, id int64, key string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE workspace SET setup_key = ? WHERE id = ?`, key, id); err != nil {
		return fmt.Errorf("set workspace %d setup key: %w", id, err)
	}
	return nil
}
