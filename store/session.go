package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/grove-dev/grove"
)

const sessionColumns = `s.id, s.repo_id, r.path, s.state, s.base_commit, s.target_branch, s.serve_argv, s.port, s.created_at, s.last_used_at,
	s.reason, s.state_at, s.activity, s.last_port, s.restart, s.restarts, s.max_restarts, s.restart_at, s.base_held`

func scanSession(row scanner) (grove.Session, error) {
	var (
		s                      grove.Session
		serve                  sql.NullString
		port, lastPort, restAt sql.NullInt64
		created, used, stateAt int64
	)
	err := row.Scan(&s.ID, &s.RepoID, &s.RepoPath, &s.State, &s.BaseCommit, &s.TargetBranch, &serve, &port, &created, &used,
		&s.Reason, &stateAt, &s.Activity, &lastPort, &s.Restart, &s.Restarts, &s.MaxRestarts, &restAt, &s.BaseHeld)
	if err != nil {
		return s, err
	}
	if serve.Valid {
		if err := json.Unmarshal([]byte(serve.String), &s.Serve); err != nil {
			return s, fmt.Errorf("session %s serve argv: %w", s.ID, err)
		}
	}
	s.Port, s.LastPort = int(port.Int64), int(lastPort.Int64)
	s.CreatedAt, s.LastUsedAt, s.StateAt = fromMS(created), fromMS(used), fromMS(stateAt)
	if restAt.Valid {
		at := fromMS(restAt.Int64)
		s.RestartAt = &at
	}
	return s, nil
}

// InsertSession records a new session in state starting; an existing key
// is an error wrapping grove.ErrConflict unless that session is closed
// (then it is reopened, its history of restarts and reasons cleared).
func (t *Tx) InsertSession(ctx context.Context, s grove.Session) error {
	var serve sql.NullString
	if len(s.Serve) > 0 {
		b, _ := json.Marshal(s.Serve)
		serve = sql.NullString{String: string(b), Valid: true}
	}
	if s.Restart == "" {
		s.Restart = grove.RestartNo
	}
	res, err := t.q.ExecContext(ctx, `INSERT INTO session(id, repo_id, state, base_commit, target_branch, serve_argv, port, created_at, last_used_at,
		reason, state_at, activity, restart, restarts, max_restarts)
		VALUES(?,?,?,?,?,?,NULL,?,?,'',?,'created',?,0,?)
		ON CONFLICT(id) DO UPDATE SET repo_id = excluded.repo_id, state = excluded.state, base_commit = excluded.base_commit,
		target_branch = excluded.target_branch, serve_argv = excluded.serve_argv, port = NULL,
		last_used_at = excluded.last_used_at, archived_at = NULL, reason = '', state_at = excluded.state_at,
		activity = excluded.activity, restart = excluded.restart, restarts = 0, max_restarts = excluded.max_restarts,
		restart_at = NULL, base_held = ''
		WHERE session.state = 'closed'`,
		s.ID, s.RepoID, grove.SessionStarting, s.BaseCommit, s.TargetBranch, serve, ms(t.now), ms(t.now), ms(t.now), s.Restart, s.MaxRestarts)
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
	q += ` WHERE 1 = 1`
	if !includeClosed {
		q += ` AND s.state <> 'closed'`
	}
	and, args := s.hostAnd("r.host")
	rows, err := s.q.QueryContext(ctx, q+and+` ORDER BY s.last_used_at, s.id`, args...)
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

// MoveSession moves a session to state `to` with reason (the why of a
// dead or failed session; "" otherwise) if its state is one of from (nil:
// any) and the transition table (grove.SessionCanMove) allows the move. It
// reports whether it moved. A move to a state that is not dead or failed
// clears a pending restart; a move to live counts as activity.
func (t *Tx) MoveSession(ctx context.Context, id string, from []grove.SessionState, to grove.SessionState, reason string) (bool, error) {
	var cur string
	if err := t.q.QueryRowContext(ctx, `SELECT state FROM session WHERE id = ?`, id).Scan(&cur); err != nil {
		return false, notFound(err, "session "+id)
	}
	if (from != nil && !slices.Contains(from, cur)) || !grove.SessionCanMove(cur, to) {
		return false, nil
	}
	q := `UPDATE session SET state = ?, reason = ?, state_at = CASE WHEN state = ? THEN state_at ELSE ? END`
	args := []any{to, reason, to, ms(t.now)}
	if to != grove.SessionDead && to != grove.SessionFailed {
		q += `, restart_at = NULL`
	}
	if to == grove.SessionLive {
		q += `, last_used_at = ?`
		args = append(args, ms(t.now))
	}
	if _, err := t.q.ExecContext(ctx, q+` WHERE id = ? AND state = ?`, append(args, id, cur)...); err != nil {
		return false, fmt.Errorf("move session %s to %s: %w", id, to, err)
	}
	return true, nil
}

// SetSessionState moves a session to state (through the transition
// table, see MoveSession; a move the table forbids is an error) and
// touches it when touch.
func (t *Tx) SetSessionState(ctx context.Context, id, state string, touch bool) error {
	ok, err := t.MoveSession(ctx, id, nil, state, "")
	if err != nil {
		return err
	}
	if !ok {
		var cur string
		_ = t.q.QueryRowContext(ctx, `SELECT state FROM session WHERE id = ?`, id).Scan(&cur)
		return fmt.Errorf("set session %s state: %w", id, grove.CheckSessionMove(cur, state))
	}
	if touch {
		return t.TouchSession(ctx, id)
	}
	return nil
}

// TouchSession records activity on a session (now).
func (t *Tx) TouchSession(ctx context.Context, id string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE session SET last_used_at = ? WHERE id = ?`, ms(t.now), id); err != nil {
		return fmt.Errorf("touch session %s: %w", id, err)
	}
	return nil
}

// NoteActivity records activity on a session: now, and what it was
// (e.g. "task t1234abcd", "connection on port 20000").
func (t *Tx) NoteActivity(ctx context.Context, id, what string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE session SET last_used_at = ?, activity = ? WHERE id = ?`, ms(t.now), what, id); err != nil {
		return fmt.Errorf("touch session %s: %w", id, err)
	}
	return nil
}

// SetRestarts records a session's restart count and when the next
// restart is due (nil: none).
func (t *Tx) SetRestarts(ctx context.Context, id string, n int, at *time.Time) error {
	var due sql.NullInt64
	if at != nil {
		due = sql.NullInt64{Int64: ms(*at), Valid: true}
	}
	if _, err := t.q.ExecContext(ctx, `UPDATE session SET restarts = ?, restart_at = ? WHERE id = ?`, n, due, id); err != nil {
		return fmt.Errorf("set restarts of session %s: %w", id, err)
	}
	return nil
}

// TakeRestart clears a session's due restart; it reports whether there
// was one due at or before now (so one caller runs it).
func (t *Tx) TakeRestart(ctx context.Context, id string) (bool, error) {
	res, err := t.q.ExecContext(ctx, `UPDATE session SET restart_at = NULL WHERE id = ? AND restart_at IS NOT NULL AND restart_at <= ?`, id, ms(t.now))
	if err != nil {
		return false, fmt.Errorf("take restart of session %s: %w", id, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// HoldSessionBase records that changes made outside tasks were committed
// into the session's branch (at commit): the base stops moving at apply.
func (t *Tx) HoldSessionBase(ctx context.Context, id, commit string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE session SET base_held = ? WHERE id = ? AND base_held = ''`, commit, id); err != nil {
		return fmt.Errorf("hold base of session %s: %w", id, err)
	}
	return nil
}

// ExpireLeases frees the ports of sessions whose service is down
// (evicted, dead, failed) since before `before`; each remembers its port
// (last_port) to ask for it again. It returns the keys.
func (t *Tx) ExpireLeases(ctx context.Context, before time.Time) ([]string, error) {
	rows, err := t.q.QueryContext(ctx, `SELECT id FROM session WHERE port IS NOT NULL AND state IN ('evicted','dead','failed') AND state_at < ?`, ms(before))
	if err != nil {
		return nil, fmt.Errorf("expire port leases: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	for _, id := range ids {
		if _, err := t.q.ExecContext(ctx, `UPDATE session SET last_port = port, port = NULL WHERE id = ?`, id); err != nil {
			return nil, fmt.Errorf("expire port lease of %s: %w", id, err)
		}
	}
	return ids, nil
}

// SetSessionBase moves a session's base forward (after an apply), unless
// its base is held (HoldSessionBase): changes made outside tasks are in its
// branch, and moving the base past them would count them as applied.
func (t *Tx) SetSessionBase(ctx context.Context, id, commit string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE session SET base_commit = CASE WHEN base_held = '' THEN ? ELSE base_commit END,
		last_used_at = ? WHERE id = ?`, commit, ms(t.now), id); err != nil {
		return fmt.Errorf("set session %s base: %w", id, err)
	}
	return nil
}

// LeasePort gives session id a port of [lo, hi] and returns it: the one
// it holds, else the one it held last (when free), else the lowest that no
// open session holds and free (a probe: nothing listens on it) accepts. The
// partial unique index on session.port makes a double lease impossible. A
// full range is a *grove.UserError.
func (t *Tx) LeasePort(ctx context.Context, id string, lo, hi int, free func(port int) bool) (int, error) {
	var cur, last sql.NullInt64
	if err := t.q.QueryRowContext(ctx, `SELECT port, last_port FROM session WHERE id = ?`, id).Scan(&cur, &last); err != nil {
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
	candidates := make([]int, 0, hi-lo+2)
	if last.Valid && int(last.Int64) >= lo && int(last.Int64) <= hi {
		candidates = append(candidates, int(last.Int64))
	}
	for p := lo; p <= hi; p++ {
		candidates = append(candidates, p)
	}
	busy := 0
	tried := map[int]bool{}
	for _, p := range candidates {
		if used[p] || tried[p] {
			continue
		}
		tried[p] = true
		if free != nil && !free(p) {
			busy++
			continue
		}
		if _, err := t.q.ExecContext(ctx, `UPDATE session SET port = ?, last_port = ? WHERE id = ?`, p, p, id); err != nil {
			return 0, fmt.Errorf("lease port %d: %w", p, err)
		}
		return p, nil
	}
	return 0, grove.Userf(nil, "widen grove serve --port-range, or close sessions you no longer use (grove session ls; grove session close KEY)",
		"no free port in %d-%d (%d leased to sessions, %d in use by other processes)", lo, hi, len(used), busy)
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
		q += ` AND ` + insertOrder(t.pg) + ` < (SELECT ` + insertOrder(t.pg) + ` FROM task WHERE id = ?)`
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

// SetTaskResolvedBase records the base of a task submitted from another
// host, once its own host resolved it; a task whose base is set already
// keeps it.
func (t *Tx) SetTaskResolvedBase(ctx context.Context, id, ref, commit, target string) error {
	if _, err := t.q.ExecContext(ctx, `UPDATE task SET base_ref = ?, base_commit = ?, target_branch = ?, updated_at = ?
		WHERE id = ? AND base_commit = ''`, ref, commit, target, ms(t.now), id); err != nil {
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
	err := s.q.QueryRowContext(ctx, `SELECT COUNT(*) FROM workspace WHERE session_id = ? AND task_id IS NULL
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
