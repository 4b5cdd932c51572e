package store

import (
	"context"
	"fmt"
	"time"
)

// HostBeat is one daemon host's heartbeat row.
type HostBeat struct {
	Name      string    `json:"name"`
	SeenAt    time.Time `json:"seen_at"`
	StartedAt time.Time `json:"started_at"`
	Pid       int       `json:"pid"`
}

// Heartbeat records that this store's host has a daemon alive now (pid,
// started at started).
func (s *Store) Heartbeat(ctx context.Context, pid int, started time.Time) error {
	return s.InTx(ctx, func(tx *Tx) error {
		_, err := tx.q.ExecContext(ctx, `INSERT INTO host(name, seen_at, started_at, pid) VALUES(?, ?, ?, ?)
			ON CONFLICT(name) DO UPDATE SET seen_at = excluded.seen_at, started_at = excluded.started_at, pid = excluded.pid`,
			s.host, ms(tx.now), ms(started), pid)
		if err != nil {
			return fmt.Errorf("heartbeat of %s: %w", s.host, err)
		}
		return nil
	})
}

// Hosts lists every host that ever ran a daemon on this database, the
// least recently seen first.
func (s *Store) Hosts(ctx context.Context) ([]HostBeat, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT name, seen_at, started_at, pid FROM host ORDER BY seen_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer rows.Close()
	var out []HostBeat
	for rows.Next() {
		var h HostBeat
		var seen, started int64
		if err := rows.Scan(&h.Name, &seen, &started, &h.Pid); err != nil {
			return nil, fmt.Errorf("scan host: %w", err)
		}
		h.SeenAt, h.StartedAt = fromMS(seen), fromMS(started)
		out = append(out, h)
	}
	return out, rows.Err()
}
