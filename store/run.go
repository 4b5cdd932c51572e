package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/grove-dev/grove"
)

const runColumns = `id, COALESCE(task_id, ''), attempt, pid, start_time, boot_id, dir, exit_code, reason, started_at, ended_at`

func scanRun(row scanner) (grove.Run, error) {
	var (
		r       grove.Run
		exit    sql.NullInt64
		started int64
		ended   sql.NullInt64
	)
	err := row.Scan(&r.ID, &r.TaskID, &r.Attempt, &r.Pid, &r.StartTime, &r.BootID, &r.Dir, &exit, &r.Reason, &started, &ended)
	if exit.Valid {
		c := int(exit.Int64)
		r.ExitCode = &c
	}
	r.StartedAt = fromMS(started)
	if ended.Valid {
		e := fromMS(ended.Int64)
		r.EndedAt = &e
	}
	return r, err
}

// AgentRun returns the agent run of a task's attempt; grove.ErrNotFound if
// none was started.
func (t *Tx) AgentRun(ctx context.Context, taskID string, attempt int) (grove.Run, error) {
	r, err := scanRun(t.q.QueryRowContext(ctx, `SELECT `+runColumns+` FROM run
		WHERE task_id = ? AND attempt = ? AND kind = 'agent'`, taskID, attempt))
	if err != nil {
		return r, notFound(err, fmt.Sprintf("run of task %s attempt %d", taskID, attempt))
	}
	return r, nil
}

// AgentRun is the non-transactional AgentRun.
func (s *Store) AgentRun(ctx context.Context, taskID string, attempt int) (grove.Run, error) {
	return s.view().AgentRun(ctx, taskID, attempt)
}

// LatestAgentRun returns a task's newest agent run.
func (s *Store) LatestAgentRun(ctx context.Context, taskID string) (grove.Run, error) {
	r, err := scanRun(s.q.QueryRowContext(ctx, `SELECT `+runColumns+` FROM run
		WHERE task_id = ? AND kind = 'agent' ORDER BY attempt DESC LIMIT 1`, taskID))
	if err != nil {
		return r, notFound(err, "run of task "+taskID)
	}
	return r, nil
}

// InsertAgentRun records a started agent run (its supervisor's identity).
func (t *Tx) InsertAgentRun(ctx context.Context, r grove.Run) (int64, error) {
	var id int64
	err := t.q.QueryRowContext(ctx, `INSERT INTO run(task_id, attempt, kind, pid, start_time, boot_id, dir, started_at)
		VALUES(?,?,'agent',?,?,?,?,?) RETURNING id`, r.TaskID, r.Attempt, r.Pid, r.StartTime, r.BootID, r.Dir, ms(t.now)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("insert run of task %s: %w", r.TaskID, err)
	}
	return id, nil
}

// EndRun records how a run ended.
func (t *Tx) EndRun(ctx context.Context, id int64, exitCode int, reason string) error {
	_, err := t.q.ExecContext(ctx, `UPDATE run SET exit_code = ?, reason = ?, ended_at = ? WHERE id = ?`,
		exitCode, reason, ms(t.now), id)
	if err != nil {
		return fmt.Errorf("end run %d: %w", id, err)
	}
	return nil
}

// LiveRuns lists runs that have not ended.
func (s *Store) LiveRuns(ctx context.Context) ([]grove.Run, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT `+runColumns+` FROM run WHERE ended_at IS NULL ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list live runs: %w", err)
	}
	defer rows.Close()
	var out []grove.Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("scan run: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
