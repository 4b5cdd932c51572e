package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/grove-dev/grove"
)

// OpenExisting opens $home/grove.db for inspection (grove doctor): it
// neither creates the file nor applies migrations. A missing database
// wraps grove.ErrNotFound. Close the Store when done.
func OpenExisting(ctx context.Context, home string) (*Store, error) {
	path := filepath.Join(home, "grove.db")
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("database %s: %w", path, grove.ErrNotFound)
		}
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+DSNPragmas)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return &Store{db: db, q: db, path: path, now: time.Now, host: DefaultHost()}, nil
}

// Health is what `grove doctor` learns from the database.
type Health struct {
	Integrity     []string // PRAGMA integrity_check: ["ok"] when sound
	SchemaVersion int      // grove's schema version recorded (0: none)
	SchemaWant    int      // this grove's
	RiverVersion  int      // last River migration applied (0: none)
	RiverWant     int      // the one this grove was built with
}

// Health runs the integrity check and reads the schema and River
// migration versions. Missing tables read as version 0.
func (s *Store) Health(ctx context.Context) (Health, error) {
	h := Health{SchemaWant: grove.SchemaVersion, RiverWant: riverTargetVersion}
	if s.pg {
		// The server keeps its own integrity; reaching it is the check.
		if err := s.db.PingContext(ctx); err != nil {
			return h, fmt.Errorf("reach %s: %w", s.path, err)
		}
		h.Integrity = []string{"ok"}
		return s.healthVersions(ctx, h)
	}
	rows, err := s.q.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return h, fmt.Errorf("integrity check: %w", err)
	}
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			rows.Close()
			return h, fmt.Errorf("integrity check: %w", err)
		}
		h.Integrity = append(h.Integrity, line)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return h, fmt.Errorf("integrity check: %w", err)
	}
	return s.healthVersions(ctx, h)
}

// healthVersions reads the schema and River migration versions into h.
func (s *Store) healthVersions(ctx context.Context, h Health) (Health, error) {
	var v string
	err := s.q.QueryRowContext(ctx, `SELECT value FROM grove_meta WHERE key = 'schema_version'`).Scan(&v)
	switch {
	case err == nil:
		h.SchemaVersion, _ = strconv.Atoi(v)
	case !errors.Is(err, sql.ErrNoRows) && !noSuchTable(err):
		return h, fmt.Errorf("read schema version: %w", err)
	}
	err = s.q.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM river_migration WHERE line = 'main'`).Scan(&h.RiverVersion)
	if err != nil && !noSuchTable(err) {
		return h, fmt.Errorf("read river migration version: %w", err)
	}
	return h, nil
}

func noSuchTable(err error) bool { return isNoTable(err) }

// OpenExistingPostgres connects to the PostgreSQL database of dsn as host,
// without creating or migrating anything (for grove doctor).
func OpenExistingPostgres(ctx context.Context, dsn, host string) (*Store, error) {
	if !IsPostgres(dsn) {
		return nil, grove.Userf(grove.ErrUsage, "pass a postgres:// URL", "database %q is not a postgres:// URL", Redact(dsn))
	}
	return openPostgres(ctx, dsn, Options{Host: host}, false)
}
