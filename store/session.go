package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/grove-dev/grove"
)

const sessionColumns = `s.id, s.repo_id, r.path, s.state, s.base_commit, s.target_branch, s.serve_argv, s.port, s.created_at, s.last_used_at`

func scanSession(row scanner) (grove.Session, error) {
	var (
		s             grove.Session
		serve         sql.NullString
		port          sql.NullInt64
		created, used int64
	)
	err := row.Scan(&s.ID, &s.RepoID, &s.RepoPath, &s.State, &s.BaseCommit, &s.TargetBranch, &serve, &port, &created, &used)
	if err != nil {
		return s, err
	}
	if serve.Valid {
		if err := json.Unmarshal([]byte(serve.String), &s.Serve); err != nil {
			return s, fmt.Errorf("session %s serve argv: %w", s.ID, err)
		}
	}
	s.Port = int(port.Int64)
	s.CreatedAt, s.LastUsedAt = fromMS(created), fromMS(used)
	return s, nil
}

// InsertSession records a new session; an existing key is an error wrapping
// grove.ErrConflict unless that session is closed (then it is reopened).
func (t *Tx) InsertSession(ctx context.Context, s grove.Session) error {
	var serve sql.NullString
	if len(s.Serve) > 0 {
		b, _ := json.Marshal(s.Serve)
		serve = sql.NullString{String: string(b), Valid: true}
	}
	res, err := t.q.ExecContext(ctx, `INSERT INTO session(id, repo_id, state, base_commit, target_branch, serve_argv, port, created_at, last_used_at)
		VALUES(?,?,?,?,?,?,NULL,?,?)
		ON CONFLICT(id) DO UPDATE SET repo_id = excluded.repo_id, state = excluded.state, base_commit = excluded.base_commit,
		target_branch = excluded.target_branch, serve_argv = excluded.serve_argv, port = NULL,
		last_used_at = excluded.last_used_at, archived_at = NULL
		WHERE session.state = 'closed'`,
		s.ID, s.RepoID, s.State, s.BaseCommit, s.TargetBranch, serve, ms(t.now), ms(t.now))
	if err != nil {
		return fmt.Errorf("insert session %s: %w", s.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return grove.Userf(grove.ErrConflict, "use it with grove submit --session "+s.ID+", or pick another key",
			"session %s already exists", s.ID)
	}
	return nil
}

// Session loads a session by key.
func (t *Tx) Session(ctx context.Context, id string) (grove.Session, error) {
	s, err := scanSession(t.q.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM session s JOIN repo r ON r.id = s.repo_id WHERE s.id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return s, grove.Userf(grove.ErrNotFound, "start it with: grove session start "+id+" --repo DIR", "no session %q", id)
	}
	if err != nil {
		return s, fmt.Errorf("session %s: %w", id, err)
	}
	return s, nil
}

// Session loads a session by key (a read; no write lock).
func (s *Store) Session(ctx context.Context, id string) (grove.Session, error) {
	return s.view().Session(ctx, id)
}

// Sessions lists sessions that are not closed (all with includeClosed),
// least recently used first.
func (s *Store) Sessions(ctx context.Context, includeClosed bool) ([]grove.Session, error) {
	q := `SELECT ` + sessionColumns + ` FROM session s JOIN repo r ON r.id = s.repo_id`
	if !includeClosed {
		q += ` WHERE s.state <> 'closed'`
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY s.last_used_at, s.id`)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	var out []grove.Session
	for rows.Next() {
		sess, err := scanSession(rows)
		if err != nil {
			return nil, fmt.Errorf("scan session: %w", err)
		}
		out = append(out, sess)
	}
	return out, rows.Err()
}

// SetSessionState sets a session's state (and touches it when touch).
func (t *Tx) SetSessionState(ctx context.Context, id, state string, touch bool) error {
	q := `UPDATE session SET state = ? WHERE id = ?`
	args := []any{state, id}
	if touch {
		q = `UPDATE session SET state = ?, last_used_at = ? WHERE id = ?`
		args = []any{state, ms(t.now), id}
	}
	if _, err := t.q.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("set session %s state: %w", id, err)
	}
	return nil
}

// TouchSession records activity on a session.
func (t *Tx) TouchSession(ctx context.Context, id string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE session SET last_used_at = ? WHERE id = ?`, ms(t.now), id); err != nil {
		return fmt.Errorf("touch session %s: %w", id, err)
	}
	return nil
}

// SetSessionBase moves a session's base forward (after an apply).
func (t *Tx) SetSessionBase(ctx context.Context, id, commit string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE session SET base_commit = ?, last_used_at = ? WHERE id = ?`, commit, ms(t.now), id); err != nil {
		return fmt.Errorf("set session %s base: %w", id, err)
	}
	return nil
}

// LeasePort gives session id the lowest port of [lo, hi] that no open
// session holds, or keeps the one it has. The partial unique index on
// session.port makes a double lease impossible.
func (t *Tx) LeasePort(ctx context.Context, id string, lo, hi int) (int, error) {
	var cur sql.NullInt64
	if err := t.q.QueryRowContext(ctx, `SELECT port FROM session WHERE id = ?`, id).Scan(&cur); err != nil {
		return 0, fmt.Errorf("lease port for %s: %w", id, err)
	}
	if cur.Valid {
		return int(cur.Int64), nil
	}
	rows, err := t.q.QueryContext(ctx, `SELECT port FROM session WHERE port IS NOT NULL AND state <> 'closed' AND port BETWEEN ? AND ?`, lo, hi)
	if err != nil {
		return 0, fmt.Errorf("lease port: %w", err)
	}
	used := map[int]bool{}
	for rows.Next() {
		var p int
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return 0, err
		}
		used[p] = true
	}
	rows.Close()
	for p := lo; p <= hi; p++ {
		if !used[p] {
			if _, err := t.q.ExecContext(ctx, `UPDATE session SET port = ? WHERE id = ?`, p, id); err != nil {
				return 0, fmt.Errorf("lease port %d: %w", p, err)
			}
			return p, nil
		}
	}
	return 0, grove.Userf(nil, "close idle sessions, or widen --port-range", "no free port in %d-%d", lo, hi)
}

// ReleasePort frees a session's port.
func (t *Tx) ReleasePort(ctx context.Context, id string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE session SET port = NULL WHERE id = ?`, id); err != nil {
		return fmt.Errorf("release port of %s: %w", id, err)
	}
	return nil
}

// SessionWorkspace returns a session's live workspace.
func (t *Tx) SessionWorkspace(ctx context.Context, id string) (grove.Workspace, error) {
	w, err := scanWorkspace(t.q.QueryRowContext(ctx,
		`SELECT `+wsColumns+` FROM workspace WHERE session_id = ? AND task_id IS NULL AND archived_at IS NULL ORDER BY id DESC LIMIT 1`, id))
	if err != nil {
		return w, notFound(err, "workspace of session "+id)
	}
	return w, nil
}

// SessionBusy reports whether a session has a task that is not settled
// (queued to applying, or in review with an automatic apply on its way),
// other than the task `except`, submitted before it when before is set.
func (t *Tx) SessionBusy(ctx context.Context, id, except string, before bool) (bool, error) {
	q := `SELECT COUNT(*) FROM task WHERE session_id = ? AND id <> ? AND (state IN ('queued','preparing','running','diffing','applying')
		OR (state = 'review' AND apply_policy = 'auto' AND exit_code = 0 AND error = ''))`
	args := []any{id, except}
	if before {
		q += ` AND rowid < (SELECT rowid FROM task WHERE id = ?)`
		args = append(args, except)
	}
	var n int
	if err := t.q.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return false, fmt.Errorf("session %s busy: %w", id, err)
	}
	return n > 0, nil
}

// SetTaskBase records the commit a session task's diff is taken against
// (the session worktree's HEAD when the task started).
func (t *Tx) SetTaskBase(ctx context.Context, id, commit string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE task SET base_commit = ?, updated_at = ? WHERE id = ?`, commit, ms(t.now), id); err != nil {
		return fmt.Errorf("set task %s base: %w", id, err)
	}
	return nil
}

// InsertServiceRun records a started service run of a session.
func (t *Tx) InsertServiceRun(ctx context.Context, sessionID string, n int, r grove.Run) error {
	_, err := t.q.ExecContext(ctx, `INSERT INTO run(session_id, attempt, kind, pid, start_time, boot_id, dir, started_at)
		VALUES(?,?,'service',?,?,?,?,?)`, sessionID, n, r.Pid, r.StartTime, r.BootID, r.Dir, ms(t.now))
	if err != nil {
		return fmt.Errorf("insert service run of %s: %w", sessionID, err)
	}
	return nil
}

// ServiceRun returns a session's newest service run.
func (t *Tx) ServiceRun(ctx context.Context, sessionID string) (grove.Run, error) {
	r, err := scanRun(t.q.QueryRowContext(ctx, `SELECT `+runColumns+` FROM run
		WHERE session_id = ? AND kind = 'service' ORDER BY attempt DESC LIMIT 1`, sessionID))
	if err != nil {
		return r, notFound(err, "service run of session "+sessionID)
	}
	return r, nil
}

// SessionReady reports whether the session has a ready worktree.
func (s *Store) SessionReady(ctx context.Context, id string) bool {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM workspace WHERE session_id = ? AND task_id IS NULL
		AND archived_at IS NULL AND state = 'ready'`, id).Scan(&n)
	return err == nil && n > 0
}

// SessionEvents returns a session's events, oldest first.
func (s *Store) SessionEvents(ctx context.Context, id string) ([]grove.Event, error) {
	return s.events(ctx, `session_id = ?`, id)
}

// TouchSessionAt sets a session's last activity to at (tests and imports).
func (t *Tx) TouchSessionAt(ctx context.Context, id string, at time.Time) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE session SET last_used_at = ? WHERE id = ?`, ms(at), id); err != nil {
		return fmt.Errorf("touch session %s: %w", id, err)
	}
	return nil
}
