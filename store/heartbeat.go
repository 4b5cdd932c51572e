package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/grove-dev/grove"
)

// HostBeat is one daemon host's heartbeat row.
type HostBeat struct {
	Name      string    `json:"name"`
	SeenAt    time.Time `json:"seen_at"`
	StartedAt time.Time `json:"started_at"`
	Pid       int       `json:"pid"`
	// Instance says which daemon wrote the row (ClaimHost): its machine
	// and home. "" for a row written before schema version 7.
	Instance string `json:"instance,omitempty"`
}

// ClaimHost makes this store's daemon the one that serves its host, or
// refuses with grove.ErrDaemonRunning when another instance (another home
// or machine, see HostBeat.Instance) has heartbeat the host within fresh:
// two daemons under one host name would take each other's jobs and
// worktrees. The same instance (a restart of the same daemon, even while
// its killed predecessor's row is still fresh), a row without an instance
// (an older grove) and a silent host are taken over. On success the row
// records instance, pid and started, and the store's later Heartbeat
// calls write as instance. Call it once, before the heartbeat starts.
func (s *Store) ClaimHost(ctx context.Context, instance string, fresh time.Duration, pid int, started time.Time) error {
	err := s.InTx(ctx, func(tx *Tx) error {
		var seen int64
		var other string
		var otherPid int
		err := tx.q.QueryRowContext(ctx, `SELECT seen_at, instance, pid FROM host WHERE name = ?`, s.host).Scan(&seen, &other, &otherPid)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return fmt.Errorf("read host %s: %w", s.host, err)
		default:
			if quiet := tx.now.Sub(fromMS(seen)); other != "" && other != instance && quiet < fresh {
				return grove.Userf(grove.ErrDaemonRunning, "pick another name for this box: grove serve --host NAME",
					"host %s is already served by another grove daemon (%s, pid %d, seen %s ago)", s.host, other, otherPid, quiet.Round(time.Second))
			}
		}
		_, err = tx.q.ExecContext(ctx, `INSERT INTO host(name, seen_at, started_at, pid, instance) VALUES(?, ?, ?, ?, ?)
			ON CONFLICT(name) DO UPDATE SET seen_at = excluded.seen_at, started_at = excluded.started_at, pid = excluded.pid, instance = excluded.instance`,
			s.host, ms(tx.now), ms(started), pid, instance)
		if err != nil {
			return fmt.Errorf("claim host %s: %w", s.host, err)
		}
		return nil
	})
	if err == nil {
		s.instance = instance
	}
	return err
}

// ErrHostTaken is Heartbeat's error when another instance has claimed
// this store's host since (ClaimHost after this daemon fell silent).
var ErrHostTaken = errors.New("host taken by another daemon")

// Heartbeat records that this store's host has a daemon alive now (pid,
// started at started). After ClaimHost it writes only while the row is
// still this instance's, and returns ErrHostTaken once another instance
// has claimed the host.
func (s *Store) Heartbeat(ctx context.Context, pid int, started time.Time) error {
	return s.InTx(ctx, func(tx *Tx) error {
		res, err := tx.q.ExecContext(ctx, `INSERT INTO host(name, seen_at, started_at, pid, instance) VALUES(?, ?, ?, ?, ?)
			ON CONFLICT(name) DO UPDATE SET seen_at = excluded.seen_at, started_at = excluded.started_at, pid = excluded.pid
			WHERE host.instance = excluded.instance OR host.instance = ''`,
			s.host, ms(tx.now), ms(started), pid, s.instance)
		if err != nil {
			return fmt.Errorf("heartbeat of %s: %w", s.host, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return fmt.Errorf("heartbeat of %s: %w", s.host, ErrHostTaken)
		}
		return nil
	})
}

// Hosts lists every host that ever ran a daemon on this database, the
// least recently seen first.
func (s *Store) Hosts(ctx context.Context) ([]HostBeat, error) {
	rows, err := s.q.QueryContext(ctx, `SELECT name, seen_at, started_at, pid, instance FROM host ORDER BY seen_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer rows.Close()
	var out []HostBeat
	for rows.Next() {
		var h HostBeat
		var seen, started int64
		if err := rows.Scan(&h.Name, &seen, &started, &h.Pid, &h.Instance); err != nil {
			return nil, fmt.Errorf("scan host: %w", err)
		}
		h.SeenAt, h.StartedAt = fromMS(seen), fromMS(started)
		out = append(out, h)
	}
	return out, rows.Err()
}
