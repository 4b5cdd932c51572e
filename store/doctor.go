package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	var v string
	err = s.q.QueryRowContext(ctx, `SELECT value FROM grove_meta WHERE key = 'schema_version'`).Scan(&v)
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

func noSuchTable(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such table")
}
