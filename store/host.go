package store

// HostScoped returns a view of s whose listings that maintenance walks
// (Repos, OwnedWorkspaces, Sessions, LiveWorkspaces) hold only rows of
// this store's host, on PostgreSQL where several hosts share the
// database: a host's reaper, evictor and LRU cap never touch another
// host's worktrees (which are not on its disk). On SQLite, one box, it
// is s. The view shares s's connections: close s, not the view.
func (s *Store) HostScoped() *Store {
	if !s.pg {
		return s
	}
	c := *s
	c.scoped = true
	return &c
}

// hostWhere is the WHERE clause (with its argument) that limits a listing
// to this host's rows on a HostScoped store; col is the host column.
func (s *Store) hostWhere(col string) (string, []any) {
	if !s.scoped {
		return "", nil
	}
	return " WHERE " + col + " = ?", []any{s.host}
}

// hostAnd is hostWhere for a query that already has a WHERE.
func (s *Store) hostAnd(col string) (string, []any) {
	if !s.scoped {
		return "", nil
	}
	return " AND " + col + " = ?", []any{s.host}
}
