package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/grove-dev/grove"
)

// Reassigned is the outcome of Reassign for one task.
type Reassigned struct {
	TaskID string `json:"task"`
	Repo   string `json:"repo"`
	Moved  bool   `json:"moved"`
	Reason string `json:"reason,omitempty"` // why it was not moved
}

// Reassign moves the queued tasks of repositories on host from to the
// repository at the same path on host to (PostgreSQL). A task moves only
// if it has not started: it is queued and its first job (jobKind, on
// queue fromQueue) has not been fetched; that job moves to toQueue in the
// same transaction, so exactly one host ever works it. Its base commit is
// cleared: to resolves the base ref in its own repository when the task
// starts (jobs.resolveRemoteBase). Session tasks stay
// (their session's worktree is on from). Every task considered is
// reported, moved or not and why.
func (s *Store) Reassign(ctx context.Context, from, to, jobKind, fromQueue, toQueue string) ([]Reassigned, error) {
	if !s.pg {
		return nil, grove.Userf(grove.ErrUsage, "reassign is for hosts sharing a PostgreSQL database (--database)",
			"one host: nothing to reassign on SQLite")
	}
	if from == to {
		return nil, grove.Userf(grove.ErrUsage, "name two different hosts", "--from and --to are both %q", from)
	}
	var out []Reassigned
	err := s.InTx(ctx, func(tx *Tx) error {
		out = nil
		rows, err := tx.q.QueryContext(ctx, `SELECT t.id, r.path FROM task t JOIN repo r ON r.id = t.repo_id
			WHERE r.host = ? AND t.state = 'queued' AND t.session_id IS NULL ORDER BY t.created_at, t.id`, from)
		if err != nil {
			return fmt.Errorf("list queued tasks of %s: %w", from, err)
		}
		for rows.Next() {
			var r Reassigned
			if err := rows.Scan(&r.TaskID, &r.Repo); err != nil {
				rows.Close()
				return fmt.Errorf("scan task: %w", err)
			}
			out = append(out, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("list queued tasks of %s: %w", from, err)
		}
		moved := false
		for i := range out {
			if err := tx.reassign(ctx, &out[i], from, to, jobKind, fromQueue, toQueue); err != nil {
				return err
			}
			moved = moved || out[i].Moved
		}
		if moved { // the target fetches them now, not at its next poll
			return tx.notifyInsert(ctx, toQueue)
		}
		return nil
	})
	return out, err
}

// reassign moves one task (see Reassign), or says in r why not.
func (t *Tx) reassign(ctx context.Context, r *Reassigned, from, to, jobKind, fromQueue, toQueue string) error {
	var repoID int64
	err := t.q.QueryRowContext(ctx, `SELECT id FROM repo WHERE host = ? AND path = ?`, to, r.Repo).Scan(&repoID)
	if err != nil {
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("repository %s on %s: %w", r.Repo, to, err)
		}
		r.Reason = fmt.Sprintf("no repository %s on %s (register it there with a grove command run in it)", r.Repo, to)
		return nil
	}
	res, err := t.q.ExecContext(ctx, `UPDATE river_job SET queue = ? WHERE kind = ? AND queue = ?
		AND state IN ('available', 'scheduled', 'retryable') AND args->>'task_id' = ?`, toQueue, jobKind, fromQueue, r.TaskID)
	if err != nil {
		return fmt.Errorf("move the job of task %s: %w", r.TaskID, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		r.Reason = "already started on " + from
		return nil
	}
	// The base commit was resolved on from; to resolves the base ref again
	// in its own repository (the commit may not be there).
	if _, err := t.q.ExecContext(ctx, `UPDATE task SET repo_id = ?, base_commit = '', updated_at = ? WHERE id = ? AND state = 'queued'`,
		repoID, ms(t.now), r.TaskID); err != nil {
		return fmt.Errorf("move task %s: %w", r.TaskID, err)
	}
	if err := t.AddEvent(ctx, r.TaskID, "", "reassigned", fmt.Sprintf("from host %s to %s (base resolved again there)", from, to)); err != nil {
		return err
	}
	r.Moved = true
	return nil
}

// QueueWaiting reports whether queue holds a job waiting to be worked
// (available, scheduled or retryable): an agent started ahead of its turn
// would pass it (see jobs/early_start.go).
func (t *Tx) QueueWaiting(ctx context.Context, queue string) (bool, error) {
	var n int
	err := t.q.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM river_job
		WHERE queue = ? AND state IN ('available', 'scheduled', 'retryable') LIMIT 1) w`, queue).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("jobs waiting on queue %s: %w", queue, err)
	}
	return n > 0, nil
}
