package store

import (
	"context"
	"fmt"

	"github.com/grove-dev/grove"
)

// UpsertRepo registers r (keyed by its path) and returns its id.
func (t *Tx) UpsertRepo(ctx context.Context, r grove.Repo) (int64, error) {
	var id int64
	err := t.q.QueryRowContext(ctx, `
		INSERT INTO repo(path, common_dir, default_branch, created_at) VALUES(?, ?, ?, ?)
		ON CONFLICT(path) DO UPDATE SET common_dir = excluded.common_dir, default_branch = excluded.default_branch
		RETURNING id`, r.Path, r.CommonDir, r.DefaultBranch, ms(t.now)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("upsert repo %s: %w", r.Path, err)
	}
	return id, nil
}

// Repo loads a repository by id.
func (s *Store) Repo(ctx context.Context, id int64) (grove.Repo, error) {
	var r grove.Repo
	err := s.q.QueryRowContext(ctx, `SELECT id, path, common_dir, default_branch FROM repo WHERE id = ?`, id).
		Scan(&r.ID, &r.Path, &r.CommonDir, &r.DefaultBranch)
	if err != nil {
		return r, notFound(err, fmt.Sprintf("repo %d", id))
	}
	return r, nil
}

// RepoByPath loads a repository by its main worktree path.
func (s *Store) RepoByPath(ctx context.Context, path string) (grove.Repo, error) {
	var r grove.Repo
	err := s.q.QueryRowContext(ctx, `SELECT id, path, common_dir, default_branch FROM repo WHERE path = ?`, path).
		Scan(&r.ID, &r.Path, &r.CommonDir, &r.DefaultBranch)
	if err != nil {
		return r, notFound(err, "repo "+path)
	}
	return r, nil
}

// Repos lists every registered repository.
func (s *Store) Repos(ctx context.Context) ([]grove.Repo, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT id, path, common_dir, default_branch FROM repo ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list repos: %w", err)
	}
	defer rows.Close()
	var out []grove.Repo
	for rows.Next() {
		var r grove.Repo
		if err := rows.Scan(&r.ID, &r.Path, &r.CommonDir, &r.DefaultBranch); err != nil {
			return nil, fmt.Errorf("scan repo: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
