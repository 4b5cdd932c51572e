package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/grove-dev/grove"
)

// Tx is one write transaction (from InTx), or a read-only view (from
// Read). Its methods run SQL on it; SQL() gives the raw *sql.Tx for
// river.Client.InsertTx so a job insert commits with it.
type Tx struct {
	tx    *sql.Tx // nil in a Read
	q     querier // tx, or the pool for a Read
	now   time.Time
	after []func() // AfterCommit hooks
	pg    bool     // on PostgreSQL
	host  string   // the store's host
}

// querier is what *sql.Tx and *sql.DB have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// SQL returns the underlying transaction, for River's InsertTx only.
func (t *Tx) SQL() *sql.Tx { return t.tx }

// AfterCommit runs fn once the transaction has committed (never if it
// rolls back), after InTx has released it: the place to tell another
// process about what the transaction made visible.
func (t *Tx) AfterCommit(fn func()) { t.after = append(t.after, fn) }

// Now is the transaction's clock reading (one value per transaction).
func (t *Tx) Now() time.Time { return t.now }

// InTx runs fn in one immediate (write-locking) transaction and commits it
// if fn returns nil. fn must not call Store methods (one connection).
//
// BEGIN IMMEDIATE takes the write lock; when many processes write at once
// and the busy timeout runs out, it is tried again (nothing has happened
// yet) for up to a minute, so SQLITE_BUSY never reaches a user.
//
// On PostgreSQL the transaction takes grove's advisory write lock first
// (see beginPG): the same one-writer-at-a-time guarantee, across hosts.
func (s *Store) InTx(ctx context.Context, fn func(*Tx) error) error {
	if s.pg {
		tx, done, err := s.beginPG(ctx)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		defer done()
		return s.runTx(tx, pgQuerier{tx}, func(t *Tx) error {
			if err := fn(t); err != nil {
				return err
			}
			// Wakes every Commits watcher once this commits.
			_, err := tx.ExecContext(ctx, `SELECT pg_notify('`+commitChannel+`', '')`)
			return err
		})
	}
	tx, err := s.db.BeginTx(ctx, nil)
	for wait, deadline := 10*time.Millisecond, time.Now().Add(time.Minute); err != nil && isBusy(err) && time.Now().Before(deadline); wait = min(2*wait, 500*time.Millisecond) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("begin: %w", ctx.Err())
		case <-time.After(wait):
		}
		tx, err = s.db.BeginTx(ctx, nil)
	}
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	return s.runTx(tx, tx, fn)
}

// runTx runs fn in tx (whose statements go through q), commits it when fn
// returns nil and then runs the AfterCommit hooks.
func (s *Store) runTx(tx *sql.Tx, q querier, fn func(*Tx) error) error {
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	t := &Tx{tx: tx, q: q, now: s.now(), pg: s.pg, host: s.host}
	if err := fn(t); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.committed()
	for _, f := range t.after {
		f()
	}
	return nil
}

// Read runs fn's queries outside a transaction: each is its own snapshot,
// and none takes the write lock (every transaction here is BEGIN
// IMMEDIATE). fn must only read; it must not call SQL().
func (s *Store) Read(ctx context.Context, fn func(*Tx) error) error { return fn(s.view()) }

// view is a Tx whose queries run on the pool, outside a transaction.
func (s *Store) view() *Tx { return &Tx{q: s.q, now: s.now(), pg: s.pg, host: s.host} }

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v) }

func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, grove.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isBusy reports whether err is SQLite's "database is locked" (SQLITE_BUSY).
func isBusy(err error) bool {
	return err != nil && strings.Contains(err.Error(), "SQLITE_BUSY")
}
