package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/grove-dev/grove"
)

// AddEvent appends to the audit trail.
func (t *Tx) AddEvent(ctx context.Context, taskID, sessionID, kind, msg string) error {
	_, err := t.q.ExecContext(ctx, `INSERT INTO event(task_id, session_id, at, kind, message) VALUES(?,?,?,?,?)`,
		nullString(taskID), nullString(sessionID), ms(t.now), kind, msg)
	if err != nil {
		return fmt.Errorf("add event %s: %w", kind, err)
	}
	return nil
}

// AddEvent appends to the audit trail in its own transaction.
func (s *Store) AddEvent(ctx context.Context, taskID, sessionID, kind, msg string) error {
	return s.InTx(ctx, func(tx *Tx) error { return tx.AddEvent(ctx, taskID, sessionID, kind, msg) })
}

// Events returns a task's events, oldest first, with id > after.
func (s *Store) Events(ctx context.Context, taskID string, after int64) ([]grove.Event, error) {
	return s.events(ctx, `task_id = ? AND id > ?`, taskID, after)
}

func (s *Store) events(ctx context.Context, where string, args ...any) ([]grove.Event, error) {
	return s.eventsLimit(ctx, where, -1, args...)
}

// eventsLimit is events with at most limit rows (a negative limit: all),
// oldest first.
func (s *Store) eventsLimit(ctx context.Context, where string, limit int, args ...any) ([]grove.Event, error) {
	q := `SELECT id, COALESCE(task_id, ''), COALESCE(session_id, ''), at, kind, message
		FROM event WHERE ` + where + ` ORDER BY id`
	if limit >= 0 { // PostgreSQL has no LIMIT -1
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.q.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []grove.Event
	for rows.Next() {
		var e grove.Event
		var at int64
		if err := rows.Scan(&e.ID, &e.TaskID, &e.SessionID, &at, &e.Kind, &e.Message); err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		e.At = fromMS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// RescueRunningJobs makes River jobs left `running` by a dead daemon
// available again. Only call it while holding the home's daemon lock, which
// proves no other daemon is working them. Returns how many were rescued.
//
// On PostgreSQL, where daemons of other hosts share the queue, only the
// jobs a daemon of this store's host ran last are taken back (River
// records the client ids, see ClientIDPrefix); another host's are its own
// to rescue.
func (s *Store) RescueRunningJobs(ctx context.Context) (int64, error) {
	var res sql.Result
	err := s.InTx(ctx, func(tx *Tx) error {
		var err error
		if s.pg {
			res, err = tx.q.ExecContext(ctx, `UPDATE river_job SET state = 'available'
				WHERE state = 'running' AND starts_with(attempted_by[array_length(attempted_by, 1)], ?)`,
				ClientIDPrefix("serve", s.host))
			return err
		}
		res, err = tx.q.ExecContext(ctx, `UPDATE river_job SET state = 'available'
			WHERE state = 'running'`)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("rescue running jobs: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// ClientIDPrefix begins the River client id of every grove client of a
// role ("serve", "cli") on host: the id is the prefix, the pid and a
// nonce. '@' cannot occur in a host name, so one host's prefix never
// begins another's.
func ClientIDPrefix(role, host string) string { return "grove-" + role + "@" + host + "@" }
