package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/grove-dev/grove"
)

// PutChange records (or replaces) the diff summary of a task.
func (t *Tx) PutChange(ctx context.Context, c grove.Change) error {
	files, err := json.Marshal(c.Files)
	if err != nil {
		return fmt.Errorf("encode change files: %w", err)
	}
	_, err = t.q.ExecContext(ctx, `INSERT INTO change(task_id, base_commit, head_commit, files, added, deleted)
		VALUES(?,?,?,?,?,?) ON CONFLICT(task_id) DO UPDATE SET base_commit = excluded.base_commit,
		head_commit = excluded.head_commit, files = excluded.files, added = excluded.added, deleted = excluded.deleted`,
		c.TaskID, c.BaseCommit, c.HeadCommit, string(files), c.Added, c.Deleted)
	if err != nil {
		return fmt.Errorf("record change of task %s: %w", c.TaskID, err)
	}
	return nil
}

func scanChange(row scanner) (grove.Change, error) {
	var c grove.Change
	var files string
	if err := row.Scan(&c.TaskID, &c.BaseCommit, &c.HeadCommit, &files, &c.Added, &c.Deleted); err != nil {
		return c, err
	}
	if err := json.Unmarshal([]byte(files), &c.Files); err != nil {
		return c, fmt.Errorf("decode change files: %w", err)
	}
	return c, nil
}

const changeQuery = `SELECT task_id, base_commit, head_commit, files, added, deleted FROM change WHERE task_id = ?`

// Change returns the diff summary of a task.
func (s *Store) Change(ctx context.Context, taskID string) (grove.Change, error) {
	return s.view().Change(ctx, taskID)
}

// Change returns the diff summary of a task inside the transaction.
func (t *Tx) Change(ctx context.Context, taskID string) (grove.Change, error) {
	c, err := scanChange(t.q.QueryRowContext(ctx, changeQuery, taskID))
	if err != nil {
		return c, notFound(err, "change of task "+taskID)
	}
	return c, nil
}
