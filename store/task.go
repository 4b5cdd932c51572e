package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/grove-dev/grove"
)

const taskColumns = `t.id, t.repo_id, r.path, t.session_id, t.base_ref, t.base_commit, t.target_branch,
	t.argv, t.env, t.path_env, t.timeout_ms, t.apply_policy, t.idem_key, t.state, t.error, t.exit_code,
	t.attempt, t.cancel_asked, t.created_at, t.updated_at, t.options, r.host`

const taskFrom = ` FROM task t JOIN repo r ON r.id = t.repo_id `

type scanner interface{ Scan(dest ...any) error }

func scanTask(row scanner) (grove.Task, error) {
	var (
		t                  grove.Task
		session, key       sql.NullString
		argv, env, options string
		timeoutMS          int64
		exit               sql.NullInt64
		cancel             int
		created, updated   int64
		state, applyPolicy string
	)
	err := row.Scan(&t.ID, &t.RepoID, &t.RepoPath, &session, &t.BaseRef, &t.BaseCommit, &t.TargetBranch,
		&argv, &env, &t.Path, &timeoutMS, &applyPolicy, &key, &state, &t.Error, &exit,
		&t.Attempt, &cancel, &created, &updated, &options, &t.Host)
	if err != nil {
		return t, err
	}
	t.SessionID, t.IdemKey = session.String, key.String
	t.State, t.Apply = grove.TaskState(state), grove.ApplyPolicy(applyPolicy)
	t.Timeout = time.Duration(timeoutMS) * time.Millisecond
	t.CancelAsked = cancel != 0
	t.CreatedAt, t.UpdatedAt = fromMS(created), fromMS(updated)
	if exit.Valid {
		c := int(exit.Int64)
		t.ExitCode = &c
	}
	if err := json.Unmarshal([]byte(argv), &t.Argv); err != nil {
		return t, fmt.Errorf("task %s argv: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(env), &t.Env); err != nil {
		return t, fmt.Errorf("task %s env: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(options), &t.Options); err != nil {
		return t, fmt.Errorf("task %s options: %w", t.ID, err)
	}
	return t, nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// InsertTask records a new task. When t.IdemKey is set and a task with that
// key exists, nothing is inserted and the existing task is returned with
// created=false.
func (t *Tx) InsertTask(ctx context.Context, task grove.Task) (out grove.Task, created bool, err error) {
	if task.IdemKey != "" {
		existing, err := t.taskWhere(ctx, `t.idem_key = ?`, task.IdemKey)
		if err == nil {
			return existing, false, nil
		}
		if !errors.Is(err, grove.ErrNotFound) {
			return out, false, err
		}
	}
	argv, _ := json.Marshal(task.Argv)
	if task.Env == nil {
		task.Env = map[string]string{}
	}
	env, _ := json.Marshal(task.Env)
	options, err := json.Marshal(task.Options)
	if err != nil {
		return out, false, fmt.Errorf("encode options of task %s: %w", task.ID, err)
	}
	task.CreatedAt, task.UpdatedAt = t.now, t.now
	if task.Attempt == 0 {
		task.Attempt = 1
	}
	_, err = t.q.ExecContext(ctx, `INSERT INTO task(id, repo_id, session_id, base_ref, base_commit, target_branch,
		argv, env, path_env, timeout_ms, apply_policy, idem_key, state, attempt, created_at, updated_at, options)
		VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		task.ID, task.RepoID, nullString(task.SessionID), task.BaseRef, task.BaseCommit, task.TargetBranch,
		string(argv), string(env), task.Path, task.Timeout.Milliseconds(), string(task.Apply),
		nullString(task.IdemKey), string(task.State), task.Attempt, ms(t.now), ms(t.now), string(options))
	if err != nil {
		return out, false, fmt.Errorf("insert task %s: %w", task.ID, err)
	}
	return task, true, nil
}

func (t *Tx) taskWhere(ctx context.Context, where string, args ...any) (grove.Task, error) {
	task, err := scanTask(t.q.QueryRowContext(ctx, `SELECT `+taskColumns+taskFrom+`WHERE `+where, args...))
	if err != nil {
		return task, notFound(err, "task")
	}
	return task, nil
}

// TaskHost is the host of task id's repository.
func (t *Tx) TaskHost(ctx context.Context, id string) (string, error) {
	var host string
	err := t.q.QueryRowContext(ctx, `SELECT r.host FROM task t JOIN repo r ON r.id = t.repo_id WHERE t.id = ?`, id).Scan(&host)
	if err != nil {
		return "", notFound(err, "host of task "+id)
	}
	return host, nil
}

// Task loads a task inside the transaction.
func (t *Tx) Task(ctx context.Context, id string) (grove.Task, error) {
	task, err := t.taskWhere(ctx, `t.id = ?`, id)
	if err != nil {
		return task, fmt.Errorf("task %s: %w", id, errors.Unwrap(err))
	}
	return task, nil
}

// Task loads a task by id.
func (s *Store) Task(ctx context.Context, id string) (grove.Task, error) {
	return s.view().Task(ctx, id)
}

// ResolveTaskID turns an exact id or a unique prefix of at least 4
// characters into a task id. An unknown id wraps grove.ErrNotFound; an
// ambiguous or too short prefix wraps grove.ErrBadRequest and names the
// tasks it matches.
func (s *Store) ResolveTaskID(ctx context.Context, idOrPrefix string) (string, error) {
	var id string
	err := s.q.QueryRowContext(ctx, `SELECT id FROM task WHERE id = ?`, idOrPrefix).Scan(&id)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("find task %s: %w", idOrPrefix, err)
	}
	if idOrPrefix != "" && !strings.ContainsAny(idOrPrefix, "%_") {
		rows, err := s.q.QueryContext(ctx, `SELECT id FROM task WHERE id LIKE ? ORDER BY id LIMIT 11`, idOrPrefix+"%")
		if err != nil {
			return "", fmt.Errorf("find task %s: %w", idOrPrefix, err)
		}
		defer rows.Close()
		var ids []string
		for rows.Next() {
			if err := rows.Scan(&id); err != nil {
				return "", err
			}
			ids = append(ids, id)
		}
		if err := rows.Err(); err != nil {
			return "", fmt.Errorf("find task %s: %w", idOrPrefix, err)
		}
		switch {
		case len(ids) == 1 && len(idOrPrefix) >= 4:
			return ids[0], nil
		case len(ids) == 1:
			return "", grove.Userf(grove.ErrBadRequest, "give four or more characters of the id",
				"task id prefix %q is too short (it matches %s)", idOrPrefix, ids[0])
		case len(ids) > 1:
			list := strings.Join(ids[:min(len(ids), 10)], ", ")
			if len(ids) > 10 {
				list += ", ..."
			}
			return "", grove.Userf(grove.ErrBadRequest, "give more characters of the id",
				"task id %q is ambiguous: it matches %s", idOrPrefix, list)
		}
	}
	return "", grove.Userf(grove.ErrNotFound, "list tasks with: grove ls", "no task %q", idOrPrefix)
}

// TaskFilter selects tasks for ListTasks. Zero values mean "any".
type TaskFilter struct {
	States []grove.TaskState
	RepoID int64
	Host   string // tasks of repositories on this host
	Limit  int
}

// ListTasks returns tasks newest first.
func (s *Store) ListTasks(ctx context.Context, f TaskFilter) ([]grove.Task, error) {
	var (
		where []string
		args  []any
	)
	if len(f.States) > 0 {
		where = append(where, `t.state IN (?`+strings.Repeat(",?", len(f.States)-1)+`)`)
		for _, st := range f.States {
			args = append(args, string(st))
		}
	}
	if f.RepoID != 0 {
		where = append(where, `t.repo_id = ?`)
		args = append(args, f.RepoID)
	}
	if f.Host != "" {
		where = append(where, `r.host = ?`)
		args = append(args, f.Host)
	}
	q := `SELECT ` + taskColumns + taskFrom
	if len(where) > 0 {
		q += `WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY t.created_at DESC, t.id DESC`
	if f.Limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, f.Limit)
	}
	rows, err := s.q.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	var out []grove.Task
	for rows.Next() {
		task, err := scanTask(rows)
		if err != nil {
			return nil, fmt.Errorf("scan task: %w", err)
		}
		out = append(out, task)
	}
	return out, rows.Err()
}

// SetState moves task id to state `to` if it is currently in one of `from`
// (any state when from is empty), recording msg as its error when msg is not
// empty. It reports whether the row changed, so callers can tell they lost a
// race (e.g. a cancel) and stop. A move the state machine does not allow
// (grove.TaskState.CanMove) is refused with a *grove.TransitionError and
// changes nothing.
func (t *Tx) SetState(ctx context.Context, id string, from []grove.TaskState, to grove.TaskState, msg string) (bool, error) {
	cur, ok, err := t.taskState(ctx, id)
	if err != nil || !ok {
		return false, err
	}
	if len(from) > 0 && !slices.Contains(from, cur) {
		return false, nil
	}
	if !cur.CanMove(to) {
		return false, &grove.TransitionError{TaskID: id, From: cur, To: to}
	}
	res, err := t.q.ExecContext(ctx, `UPDATE task SET state = ?, updated_at = ?,
		error = CASE WHEN ? = '' THEN error ELSE ? END WHERE id = ? AND state = ?`,
		string(to), ms(t.now), msg, msg, id, string(cur))
	if err != nil {
		return false, fmt.Errorf("set task %s state %s: %w", id, to, err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// taskState reads a task's state; ok is false when there is no such task.
func (t *Tx) taskState(ctx context.Context, id string) (grove.TaskState, bool, error) {
	var st string
	err := t.q.QueryRowContext(ctx, `SELECT state FROM task WHERE id = ?`, id).Scan(&st)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read task %s state: %w", id, err)
	}
	return grove.TaskState(st), true, nil
}

// SetExitCode records the agent's exit code on the task.
func (t *Tx) SetExitCode(ctx context.Context, id string, code int) error {
	_, err := t.q.ExecContext(ctx, `UPDATE task SET exit_code = ?, updated_at = ? WHERE id = ?`, code, ms(t.now), id)
	if err != nil {
		return fmt.Errorf("set task %s exit code: %w", id, err)
	}
	return nil
}

// AskCancel flags the task as canceled by a person; workers check the flag.
func (t *Tx) AskCancel(ctx context.Context, id string) error {
	_, err := t.q.ExecContext(ctx, `UPDATE task SET cancel_asked = 1, updated_at = ? WHERE id = ?`, ms(t.now), id)
	if err != nil {
		return fmt.Errorf("flag task %s canceled: %w", id, err)
	}
	return nil
}

// Retry resets a finished task for another attempt: state queued, attempt+1,
// error, exit code and cancel flag cleared.
// The move to queued goes through the state machine like any other.
func (t *Tx) Retry(ctx context.Context, id string) error {
	cur, ok, err := t.taskState(ctx, id)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("reset task %s: %w", id, grove.ErrNotFound)
	}
	if !cur.CanMove(grove.StateQueued) {
		return &grove.TransitionError{TaskID: id, From: cur, To: grove.StateQueued}
	}
	_, err = t.q.ExecContext(ctx, `UPDATE task SET state = ?, attempt = attempt + 1, error = '',
		exit_code = NULL, cancel_asked = 0, updated_at = ? WHERE id = ? AND state = ?`,
		string(grove.StateQueued), ms(t.now), id, string(cur))
	if err != nil {
		return fmt.Errorf("reset task %s: %w", id, err)
	}
	return nil
}

// CountTasks counts tasks by state.
func (s *Store) CountTasks(ctx context.Context) (map[grove.TaskState]int, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT state, COUNT(*) FROM task GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count tasks: %w", err)
	}
	defer rows.Close()
	out := map[grove.TaskState]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[grove.TaskState(st)] = n
	}
	return out, rows.Err()
}
