package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"golang.org/x/sys/unix"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/grove-dev/grove"
)

// Store is grove's database handle. It is safe for concurrent use; calls are
// serialised on one connection.
type Store struct {
	db   *sql.DB
	q    querier // db, translating SQLite's spelling on PostgreSQL
	path string  // the SQLite file, or the redacted PostgreSQL URL
	now  func() time.Time
	host string // Options.Host

	pg     bool          // on PostgreSQL (see dialect.go)
	pool   *pgxpool.Pool // PostgreSQL: the pool under db, River's driver's
	pgTxs  *sync.Map     // PostgreSQL: *sql.Tx of an open InTx -> its *pgx.Conn
	scoped bool          // HostScoped: listings show only this host's rows
	// instance is the daemon identity ClaimHost recorded for the host.
	instance string
	commits  *commitSignal // Committed (committed.go); shared by copies
}

// DSNPragmas are the connection settings every grove process uses.
// journal_mode(WAL) is not among them: WAL is persistent in the file, set
// once by the migration; setting it on every connection needs a lock that
// a busy database refuses at once, busy timeout or not.
const DSNPragmas = "_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)&_txlock=immediate"

// Options tune Open.
type Options struct {
	// Now is the clock (tests inject one). Defaults to time.Now.
	Now func() time.Time
	// Database is a PostgreSQL URL (postgres://…) to use instead of
	// SQLite in the home (GROVE_DATABASE, --database). Empty: SQLite.
	Database string
	// Host is this box's name among the hosts sharing a PostgreSQL
	// database (--host). Defaults to the machine's host name.
	Host string
}

// Open opens (creating if needed) $home/grove.db and brings its schema up to
// date: grove's tables, then River's migrations, under a file lock so
// concurrent processes migrate once. A database written by a newer grove is
// refused before anything is changed. home is created with mode 0700 and the
// database file with 0600. Close the Store when done.
//
// With opts.Database set, the database is that PostgreSQL server instead
// (home still holds runs, worktrees and locks), migrated the same way
// under an advisory lock.
func Open(ctx context.Context, home string, opts Options) (*Store, error) {
	if opts.Host == "" {
		opts.Host = DefaultHost()
	}
	if opts.Database != "" {
		if !IsPostgres(opts.Database) {
			return nil, grove.Userf(grove.ErrUsage, "pass a postgres:// URL, or unset GROVE_DATABASE to use SQLite in the home",
				"database %q is not a postgres:// URL", Redact(opts.Database))
		}
		if err := os.MkdirAll(home, 0o700); err != nil {
			return nil, fmt.Errorf("create home %s: %w", home, err)
		}
		return openPostgres(ctx, opts.Database, opts, true)
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("create home %s: %w", home, err)
	}
	path := filepath.Join(home, "grove.db")
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o600); err != nil {
		return nil, fmt.Errorf("create database %s: %w", path, err)
	} else {
		f.Close()
	}
	db := sql.OpenDB(newSQLiteConnector("file:" + path + "?" + DSNPragmas)) // statements kept: stmtcache.go
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	s := &Store{db: db, q: db, path: path, now: opts.Now, host: opts.Host, commits: &commitSignal{}}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.migrate(ctx, home); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Host is the name of the host this store works for (Options.Host).
func (s *Store) Host() string { return s.host }

// DefaultHost is the machine's host name, or "localhost" when it has none.
func DefaultHost() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// DB is the underlying pool, for River's driver. Do not run SQL on it
// outside this package.
func (s *Store) DB() *sql.DB { return s.db }

// Path is the database file's path.
func (s *Store) Path() string { return s.path }

// Close closes the database. Safe to call once after a successful Open.
func (s *Store) Close() error {
	err := s.db.Close()
	if s.pool != nil {
		s.pool.Close()
	}
	return err
}

// sqliteDriver is River's SQLite driver on db.
func sqliteDriver(db *sql.DB) riverdriver.Driver[*sql.Tx] { return riversqlite.New(db) }

func (s *Store) migrate(ctx context.Context, home string) error {
	// migrate.lock: shared while a process opens its connection and checks
	// the version (so its first connection, and its journal-mode pragma,
	// never meets a migration half-way), exclusive while one migrates.
	lf, err := os.OpenFile(filepath.Join(home, "migrate.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open migrate lock: %w", err)
	}
	defer lf.Close() // releases the lock
	if err := flock(ctx, lf, unix.LOCK_SH); err != nil {
		return err
	}
	ok, err := s.upToDate(ctx)
	for wait, deadline := 10*time.Millisecond, time.Now().Add(30*time.Second); isBusy(err) && time.Now().Before(deadline); wait = min(2*wait, 500*time.Millisecond) {
		time.Sleep(wait)
		ok, err = s.upToDate(ctx)
	}
	if err != nil || ok {
		return err
	}
	// Slow path: one process migrates at a time.
	if err := flock(ctx, lf, unix.LOCK_EX); err != nil {
		return err
	}
	if ok, err := s.upToDate(ctx); err != nil || ok {
		return err
	}
	var mode string
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode=WAL`).Scan(&mode); err != nil || mode != "wal" {
		return fmt.Errorf("set WAL journal mode on %s: %v (mode %q)", s.path, err, mode)
	}
	if _, err := s.db.ExecContext(ctx, grove.Schema); err != nil {
		return fmt.Errorf("apply grove schema: %w", err)
	}
	if err := s.upgradeColumns(ctx); err != nil {
		return err
	}
	if _, err := s.q.ExecContext(ctx, `UPDATE repo SET host = ? WHERE host = ''`, s.host); err != nil {
		return fmt.Errorf("record the host of repositories: %w", err)
	}
	if _, err := s.db.ExecContext(ctx,
		`INSERT INTO grove_meta(key, value) VALUES('schema_version', ?)
		 ON CONFLICT(key) DO UPDATE SET value = excluded.value`, strconv.Itoa(grove.SchemaVersion)); err != nil {
		return fmt.Errorf("record schema version: %w", err)
	}
	migrator, err := rivermigrate.New(riversqlite.New(s.db), nil)
	if err != nil {
		return fmt.Errorf("river migrator: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	return nil
}

// flock takes (or converts to) lock how on the migrate lock f, waiting
// until it is free. f is closed on an error.
func flock(ctx context.Context, f *os.File, how int) error {
	if err := grove.Flock(ctx, f, how); err != nil {
		return fmt.Errorf("take migrate lock: %w", err)
	}
	return nil
}

// riverTargetVersion is the last River migration this grove was built with.
const riverTargetVersion = 7

// upToDate reports whether grove's schema and River's migrations are current.
// It refuses a database from a newer grove.
func (s *Store) upToDate(ctx context.Context) (bool, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM grove_meta WHERE key = 'schema_version'`).Scan(&v)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) || isNoTable(err) {
			return false, nil
		}
		return false, fmt.Errorf("read schema version of %s: %w", s.path, err)
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return false, fmt.Errorf("schema version %q of %s is not a number", v, s.path)
	}
	if n > grove.SchemaVersion {
		return false, grove.Userf(nil, "upgrade grove, or point --home at another directory",
			"database %s has schema version %d, newer than this grove's %d", s.path, n, grove.SchemaVersion)
	}
	if n < grove.SchemaVersion {
		return false, nil
	}
	var rv int
	err = s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM river_migration WHERE line = 'main'`).Scan(&rv)
	if err != nil {
		// Missing or older than migration 5 (no line column): another
		// process may be migrating right now; the caller re-checks under
		// the migrate lock.
		return false, nil
	}
	return rv >= riverTargetVersion, nil
}

// addedColumns are the columns later schema versions added to tables that
// an older database already has (CREATE TABLE IF NOT EXISTS leaves those
// alone): version 3, the session's truth (reason, activity, restarts...);
// version 4, the task's options; version 5, the setup a workspace had.
var addedColumns = []struct{ table, column, decl string }{
	{"session", "reason", "TEXT NOT NULL DEFAULT ''"},
	{"session", "state_at", "INTEGER NOT NULL DEFAULT 0"},
	{"session", "activity", "TEXT NOT NULL DEFAULT ''"},
	{"session", "last_port", "INTEGER"},
	{"session", "restart", "TEXT NOT NULL DEFAULT 'no'"},
	{"session", "restarts", "INTEGER NOT NULL DEFAULT 0"},
	{"session", "max_restarts", "INTEGER NOT NULL DEFAULT 5"},
	{"session", "restart_at", "INTEGER"},
	{"session", "base_held", "TEXT NOT NULL DEFAULT ''"},
	// version 4: per-task options (sandbox, terminal...), one JSON object.
	{"task", "options", "TEXT NOT NULL DEFAULT '{}'"},
	// version 5: the key of the setup a worktree was prepared under.
	{"workspace", "setup_key", "TEXT NOT NULL DEFAULT ''"},
	// version 6: the host a repository is on (set to this host on upgrade).
	{"repo", "host", "TEXT NOT NULL DEFAULT ''"},
	// version 7: which daemon (machine and home) serves a host.
	{"host", "instance", "TEXT NOT NULL DEFAULT ''"},
}

// upgradeColumns adds the columns of addedColumns that a table lacks. It
// runs under the exclusive migrate lock; adding is idempotent.
func (s *Store) upgradeColumns(ctx context.Context) error {
	have := map[string]bool{}
	for _, c := range addedColumns {
		if _, ok := have[c.table+"."]; ok {
			continue
		}
		rows, err := s.db.QueryContext(ctx, `SELECT name FROM pragma_table_info(?)`, c.table)
		if err != nil {
			return fmt.Errorf("read columns of %s: %w", c.table, err)
		}
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				rows.Close()
				return fmt.Errorf("read columns of %s: %w", c.table, err)
			}
			have[c.table+"."+name] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read columns of %s: %w", c.table, err)
		}
		have[c.table+"."] = true
	}
	for _, c := range addedColumns {
		if have[c.table+"."+c.column] {
			continue
		}
		if _, err := s.db.ExecContext(ctx, fmt.Sprintf(`ALTER TABLE %s ADD COLUMN %s %s`, c.table, c.column, c.decl)); err != nil {
			return fmt.Errorf("add column %s.%s: %w", c.table, c.column, err)
		}
	}
	return nil
}
