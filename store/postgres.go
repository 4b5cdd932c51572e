package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/grove-dev/grove"
)

// Advisory lock keys (pg_advisory_lock's bigint space is shared by every
// application of the database; these spell "grove" + a purpose).
const (
	migrateLockKey int64 = 0x67726f7665_01 // held (session level) while one process migrates
	writeLockKey   int64 = 0x67726f7665_02 // held (transaction level) by every grove write transaction
)

// IsPostgres reports whether database names a PostgreSQL server (a
// postgres:// or postgresql:// URL) rather than SQLite in the home.
func IsPostgres(database string) bool {
	return strings.HasPrefix(database, "postgres://") || strings.HasPrefix(database, "postgresql://")
}

// Redact is database with its password hidden, for messages and logs.
func Redact(database string) string {
	u, err := url.Parse(database)
	if err != nil {
		return "postgres://…"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// openPostgres connects to the PostgreSQL server of dsn and, when migrate
// is set, brings grove's schema and River's migrations up to date.
func openPostgres(ctx context.Context, dsn string, opts Options, migrate bool) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, grove.Userf(grove.ErrUsage, "pass a URL such as postgres://user@host/db, or unset GROVE_DATABASE",
			"bad database URL %s: %v", Redact(dsn), err)
	}
	if cfg.MaxConns < 8 {
		cfg.MaxConns = 8 // River's producers, its listener, the store
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", Redact(dsn), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to %s: %w", Redact(dsn), err)
	}
	db := stdlib.OpenDBFromPool(pool)
	s := &Store{db: db, q: pgQuerier{db}, pg: true, pool: pool, pgTxs: &sync.Map{}, path: Redact(dsn), now: opts.Now, host: opts.Host, commits: &commitSignal{}}
	if s.now == nil {
		s.now = time.Now
	}
	if migrate {
		if err := s.migratePostgres(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// migratePostgres applies grove's schema and River's migrations, one
// process at a time (a session advisory lock), and refuses a database
// from a newer grove.
func (s *Store) migratePostgres(ctx context.Context) error {
	if ok, err := s.upToDate(ctx); err != nil || ok {
		return err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("take migrate lock: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
		return fmt.Errorf("take migrate lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrateLockKey) //nolint:errcheck // released with the session anyway
	if ok, err := s.upToDate(ctx); err != nil || ok {
		return err
	}
	if _, err := s.db.ExecContext(ctx, pgSchema(grove.Schema)); err != nil {
		return fmt.Errorf("apply grove schema: %w", err)
	}
	for _, c := range addedColumns {
		if _, err := s.db.ExecContext(ctx, fmt.Sprintf(`ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s %s`, c.table, c.column, pgDecl(c.decl))); err != nil {
			return fmt.Errorf("add column %s.%s: %w", c.table, c.column, err)
		}
	}
	if _, err := s.q.ExecContext(ctx,
		`INSERT INTO grove_meta(key, value) VALUES('schema_version', ?)
		 ON CONFLICT(key) DO UPDATE SET value = excluded.value`, strconv.Itoa(grove.SchemaVersion)); err != nil {
		return fmt.Errorf("record schema version: %w", err)
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(s.pool), nil)
	if err != nil {
		return fmt.Errorf("river migrator: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("river migrations: %w", err)
	}
	return nil
}

// beginPG starts a grove write transaction on PostgreSQL: a connection of
// its own, BEGIN, then the advisory write lock, so grove's transactions
// run one at a time across every process and host (as BEGIN IMMEDIATE
// makes them on SQLite). The transaction's pgx connection is recorded so
// River's driver can insert jobs in the same transaction (pgDriver).
// done releases the connection; call it after Commit or Rollback.
func (s *Store) beginPG(ctx context.Context) (tx *sql.Tx, done func(), err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	var pc *pgx.Conn
	if err := conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		pc = c.Conn()
		return nil
	}); err != nil {
		conn.Close()
		return nil, nil, err
	}
	tx, err = conn.BeginTx(ctx, nil)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, writeLockKey); err != nil {
		tx.Rollback() //nolint:errcheck // the error that matters is err
		conn.Close()
		return nil, nil, fmt.Errorf("take write lock: %w", err)
	}
	s.pgTxs.Store(tx, pc)
	return tx, func() { s.pgTxs.Delete(tx); conn.Close() }, nil
}

// RiverDriver is River's driver for this store's database, typed on
// *sql.Tx so a job insert joins a store transaction (Tx.SQL) on either
// database: riversqlite on SQLite; riverpgxv5 (LISTEN/NOTIFY, pgx pool)
// on PostgreSQL, adapted to *sql.Tx by pgDriver.
func (s *Store) RiverDriver() riverdriver.Driver[*sql.Tx] {
	if s.pg {
		return &pgDriver{Driver: riverpgxv5.New(s.pool), s: s}
	}
	return sqliteDriver(s.db)
}

// Postgres reports whether the store is on PostgreSQL.
func (s *Store) Postgres() bool { return s.pg }

// pgDriver is riverpgxv5's driver working on the *sql.Tx of store
// transactions: the transaction's pgx connection (recorded by beginPG)
// stands in for a pgx.Tx (connTx). River only ever runs statements and
// savepoints on it; committing stays the store's.
type pgDriver struct {
	*riverpgxv5.Driver
	s *Store
}

// UnwrapExecutor returns River's executor on tx, a transaction begun by
// the store's InTx. It panics on any other transaction: a job inserted
// outside a store transaction would not commit with it.
func (d *pgDriver) UnwrapExecutor(tx *sql.Tx) riverdriver.ExecutorTx {
	pc, ok := d.s.pgTxs.Load(tx)
	if !ok {
		panic("store: River was given a *sql.Tx that is not an open store transaction")
	}
	return d.Driver.UnwrapExecutor(&connTx{conn: pc.(*pgx.Conn)})
}

// UnwrapTx is only used by River's test helpers.
func (d *pgDriver) UnwrapTx(riverdriver.ExecutorTx) *sql.Tx {
	panic("store: UnwrapTx is not supported on PostgreSQL")
}

// errTxOwned is returned when River tries to end the store's transaction.
var errTxOwned = errors.New("store: the transaction belongs to the store (InTx commits it)")

// connTx is a pgx.Tx over a connection that database/sql has in a
// transaction. Begin nests with savepoints; Commit and Rollback end only
// such a savepoint (the outer transaction is the store's). After a
// savepoint ends, further Commit or Rollback calls return pgx.ErrTxClosed
// without a statement (one failing statement would abort the whole
// transaction on PostgreSQL).
type connTx struct {
	conn   *pgx.Conn
	sp     string // savepoint name; "" for the store's transaction
	depth  int
	closed bool
}

func (t *connTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if t.closed {
		return nil, pgx.ErrTxClosed
	}
	sp := fmt.Sprintf("grove_sp_%d", t.depth+1)
	if _, err := t.conn.Exec(ctx, "SAVEPOINT "+sp); err != nil {
		return nil, err
	}
	return &connTx{conn: t.conn, sp: sp, depth: t.depth + 1}, nil
}

func (t *connTx) Commit(ctx context.Context) error {
	if t.sp == "" {
		return errTxOwned
	}
	if t.closed {
		return pgx.ErrTxClosed
	}
	t.closed = true
	_, err := t.conn.Exec(ctx, "RELEASE SAVEPOINT "+t.sp)
	return err
}

func (t *connTx) Rollback(ctx context.Context) error {
	if t.sp == "" {
		return errTxOwned
	}
	if t.closed {
		return pgx.ErrTxClosed
	}
	t.closed = true
	_, err := t.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT "+t.sp)
	return err
}

func (t *connTx) CopyFrom(ctx context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	return t.conn.CopyFrom(ctx, table, cols, src)
}

func (t *connTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return t.conn.SendBatch(ctx, b)
}

func (t *connTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }

func (t *connTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return t.conn.Prepare(ctx, name, sql)
}

func (t *connTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return t.conn.Exec(ctx, sql, args...)
}

func (t *connTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return t.conn.Query(ctx, sql, args...)
}

func (t *connTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return t.conn.QueryRow(ctx, sql, args...)
}

func (t *connTx) Conn() *pgx.Conn { return t.conn }

// riverInsertTopic is the topic River's producers LISTEN on for new jobs
// (riverpgxv5 v0.47.0, internal/notifier: NotificationTopicInsert); the
// channel is "<schema>.river_insert" and the payload {"queue": "<name>"}
// (Client.maybeNotifyInsertForQueues).
const riverInsertTopic = "river_insert"

// notifyInsert tells the River producers of queue that it has new
// available jobs, as River's own insert does, so that a job a grove
// transaction moved into queue (Reassign) is fetched at once rather than at
// the producer's next poll. PostgreSQL delivers it when tx commits.
func (t *Tx) notifyInsert(ctx context.Context, queue string) error {
	payload, err := json.Marshal(struct {
		Queue string `json:"queue"`
	}{queue})
	if err != nil {
		return err
	}
	if _, err := t.q.ExecContext(ctx, `SELECT pg_notify(current_schema() || '.`+riverInsertTopic+`', ?)`, string(payload)); err != nil {
		return fmt.Errorf("notify queue %s: %w", queue, err)
	}
	return nil
}

// commitChannel is the channel every grove transaction on PostgreSQL
// notifies as it commits (see Commits).
const commitChannel = "grove_commit"

// watchPG makes c hear commits on PostgreSQL: a connection taken out of
// the pool LISTENs on commitChannel in a goroutine until c is closed. If
// it cannot, c stays timer-only (Wait's contract allows it).
func (s *Store) watchPG(c *Commits) {
	ctx, cancel := context.WithCancel(context.Background())
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		cancel()
		return
	}
	conn := pc.Hijack()
	if _, err := conn.Exec(ctx, "LISTEN "+commitChannel); err != nil {
		conn.Close(ctx)
		cancel()
		return
	}
	notes := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close(context.Background())
		for {
			if _, err := conn.WaitForNotification(ctx); err != nil {
				return
			}
			select {
			case notes <- struct{}{}:
			default:
			}
		}
	}()
	c.notes = notes
	c.stop = func() { cancel(); <-done }
}
