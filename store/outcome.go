package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/grove-dev/grove"
)

// TaskOutcome is what a task's row does not hold but a script asks for:
// the state of its newest worktree (removed once closed) and the commit
// its apply made on the target branch.
type TaskOutcome struct {
	Worktree      string // the newest workspace's state; "" without one
	AppliedCommit string // from the "applied" event; "" if never applied
}

// outcomeScanAll is the number of ids above which TaskOutcomes reads every
// row once instead of looking each id up.
const outcomeScanAll = 200

// TaskOutcomes returns the outcome of each task of ids that has one (a
// worktree or an apply). A session's task has no worktree of its own.
func (s *Store) TaskOutcomes(ctx context.Context, ids []string) (map[string]TaskOutcome, error) {
	out := map[string]TaskOutcome{}
	if len(ids) == 0 {
		return out, nil
	}
	where, args := "", []any{}
	if len(ids) <= outcomeScanAll {
		where = " AND task_id IN (?" + strings.Repeat(",?", len(ids)-1) + ")"
		for _, id := range ids {
			args = append(args, id)
		}
	}
	rows, err := s.q.QueryContext(ctx, `SELECT task_id, state FROM workspace WHERE task_id IS NOT NULL`+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("task outcomes: %w", err)
	}
	for rows.Next() {
		var id, state string
		if err := rows.Scan(&id, &state); err != nil {
			rows.Close()
			return nil, fmt.Errorf("task outcomes: %w", err)
		}
		o := out[id]
		o.Worktree = state // rows in id order: the newest wins
		out[id] = o
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("task outcomes: %w", err)
	}
	rows, err = s.q.QueryContext(ctx, `SELECT task_id, message FROM event WHERE kind = 'applied' AND task_id IS NOT NULL`+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("task outcomes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, msg string
		if err := rows.Scan(&id, &msg); err != nil {
			return nil, fmt.Errorf("task outcomes: %w", err)
		}
		o := out[id]
		o.AppliedCommit = AppliedCommitOf(msg)
		out[id] = o
	}
	return out, rows.Err()
}

// AppliedCommitOf reads the commit id out of an "applied" event's message
// ("applied to BRANCH as COMMIT"); "" when it names none.
func AppliedCommitOf(msg string) string {
	i := strings.LastIndex(msg, " as ")
	if i < 0 {
		return ""
	}
	c := strings.TrimSpace(msg[i+4:])
	if len(c) < 40 || strings.Trim(c, "0123456789abcdef") != "" {
		return ""
	}
	return c
}

// EventsAfter returns up to limit events with id > after, oldest first:
// every task's and session's, or task taskID's only. Event ids only grow
// (one writer at a time), so after = the last id read resumes a stream.
func (s *Store) EventsAfter(ctx context.Context, after int64, taskID string, limit int) ([]grove.Event, error) {
	if taskID != "" {
		return s.eventsLimit(ctx, `id > ? AND task_id = ?`, limit, after, taskID)
	}
	return s.eventsLimit(ctx, `id > ?`, limit, after)
}
