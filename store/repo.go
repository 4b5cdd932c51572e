package store

import (
	"context"
	"fmt"

	"github.com/grove-dev/grove"
)

const repoColumns = `id, path, common_dir, default_branch, host`

// UpsertRepo registers r (keyed by its host and path; r.Host "" is the
// store's host) and returns its id. On SQLite, one box, the path alone
// is the key and the host is updated to r's.
func (t *Tx) UpsertRepo(ctx context.Context, r grove.Repo) (int64, error) {
	if r.Host == "" {
		r.Host = t.host
	}
	key := "path"
	if t.pg {
		key = "host, path"
	}
	var id int64
	err := t.q.QueryRowContext(ctx, `
		INSERT INTO repo(path, common_dir, default_branch, created_at, host) VALUES(?, ?, ?, ?, ?)
		ON CONFLICT(`+key+`) DO UPDATE SET common_dir = excluded.common_dir, default_branch = excluded.default_branch,
		host = excluded.host
		RETURNING id`, r.Path, r.CommonDir, r.DefaultBranch, ms(t.now), r.Host).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("upsert repo %s: %w", r.Path, err)
	}
	return id, nil
}

// Repo loads a repository by id.
func (s *Store) Repo(ctx context.Context, id int64) (grove.Repo, error) {
	var r grove.Repo
	err := s.q.QueryRowContext(ctx, `SELECT `+repoColumns+` FROM repo WHERE id = ?`, id).
		Scan(&r.ID, &r.Path, &r.CommonDir, &r.DefaultBranch, &r.Host)
	if err != nil {
		return r, notFound(err, fmt.Sprintf("repo %d", id))
	}
	return r, nil
}

// RepoByPath loads this host's repository by its main worktree path.
func (s *Store) RepoByPath(ctx context.Context, path string) (grove.Repo, error) {
	return s.RepoOnHost(ctx, s.host, path)
}

// RepoOnHost loads the repository at path on host.
func (s *Store) RepoOnHost(ctx context.Context, host, path string) (grove.Repo, error) {
	var r grove.Repo
	q := `SELECT ` + repoColumns + ` FROM repo WHERE path = ?`
	args := []any{path}
	if s.pg {
		q += ` AND host = ?`
		args = append(args, host)
	}
	err := s.q.QueryRowContext(ctx, q, args...).
		Scan(&r.ID, &r.Path, &r.CommonDir, &r.DefaultBranch, &r.Host)
	if err != nil {
		return r, notFound(err, "repo "+path)
	}
	return r, nil
}

// Repos lists every registered repository (only this host's from a
// HostScoped store).
func (s *Store) Repos(ctx context.Context) ([]grove.Repo, error) {
	where, args := s.hostWhere("host")
	rows, err := s.q.QueryContext(ctx, `SELECT `+repoColumns+` FROM repo`+where+` ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list repos: %w", err)
	}
	defer rows.Close()
	var out []grove.Repo
	for rows.Next() {
		var r grove.Repo
		if err := rows.Scan(&r.ID, &r.Path, &r.CommonDir, &r.DefaultBranch, &r.Host); err != nil {
			return nil, fmt.Errorf("scan repo: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
