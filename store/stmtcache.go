package store

import (
	"container/list"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"reflect"

	"modernc.org/sqlite"
)

// Prepared statements kept per connection. database/sql hands a query
// without a prepared statement to the driver's ExecContext/QueryContext,
// and modernc's SQLite parses and plans it again each time: 30–50 µs for
// a one-row select, much more for River's fetch and insert, on every call
// of every stage. cachedConn keeps each single statement it has prepared
// (by its text, at most stmtCacheSize, the least recently used go first)
// and runs it again with new arguments. SQLite re-prepares a kept
// statement by itself when the schema changes (sqlite3_prepare_v2), so a
// migration never runs against a stale plan.
//
// A kept statement is in use while rows read from it are open; the same
// text run again meanwhile (a query inside a loop over another's rows)
// gets a statement of its own, closed after use.

// stmtCacheSize bounds the statements a connection keeps: grove's and
// River's queries are a few hundred distinct texts at most.
const stmtCacheSize = 256

// sqliteConnector opens SQLite connections that keep their statements.
type sqliteConnector struct {
	dsn string
	drv *sqlite.Driver
}

func newSQLiteConnector(dsn string) *sqliteConnector {
	return &sqliteConnector{dsn: dsn, drv: &sqlite.Driver{}}
}

func (c *sqliteConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	inner, ok := conn.(sqliteConn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("sqlite driver connection %T lacks the context methods", conn)
	}
	return &cachedConn{sqliteConn: inner, byText: map[string]*list.Element{}, order: list.New()}, nil
}

func (c *sqliteConnector) Driver() driver.Driver { return c.drv }

// sqliteConn is what cachedConn needs of modernc's connection.
type sqliteConn interface {
	driver.Conn
	driver.ConnPrepareContext
	driver.ConnBeginTx
	driver.ExecerContext
	driver.QueryerContext
	driver.SessionResetter
	driver.Validator
	driver.Pinger
}

// cachedStmt is a kept statement; busy while rows of it are open.
type cachedStmt struct {
	text string
	stmt driver.Stmt
	busy bool
}

// cachedConn is a connection with its statements kept (see above). Like
// every driver.Conn it is used by one goroutine at a time.
type cachedConn struct {
	sqliteConn
	byText map[string]*list.Element // of *cachedStmt
	order  *list.List               // front: most recently used
}

// stmtFor returns the kept statement for text, preparing and keeping it
// first; shared is false for a one-off statement the caller must close
// (text already in use by open rows).
func (c *cachedConn) stmtFor(ctx context.Context, text string) (*cachedStmt, bool, error) {
	if e, ok := c.byText[text]; ok {
		cs := e.Value.(*cachedStmt)
		if !cs.busy {
			c.order.MoveToFront(e)
			return cs, true, nil
		}
		s, err := c.sqliteConn.PrepareContext(ctx, text)
		if err != nil {
			return nil, false, err
		}
		return &cachedStmt{text: text, stmt: s}, false, nil
	}
	s, err := c.sqliteConn.PrepareContext(ctx, text)
	if err != nil {
		return nil, false, err
	}
	cs := &cachedStmt{text: text, stmt: s}
	c.byText[text] = c.order.PushFront(cs)
	// Over the bound, the least recently used statements that no open rows
	// read go (one in use stays until it is the oldest idle one).
	for e := c.order.Back(); e != nil && c.order.Len() > stmtCacheSize; {
		prev := e.Prev()
		if old := e.Value.(*cachedStmt); !old.busy {
			c.drop(old)
		}
		e = prev
	}
	return cs, true, nil
}

// drop forgets cs and closes its statement.
func (c *cachedConn) drop(cs *cachedStmt) {
	if e, ok := c.byText[cs.text]; ok && e.Value.(*cachedStmt) == cs {
		c.order.Remove(e)
		delete(c.byText, cs.text)
	}
	_ = cs.stmt.Close()
}

// kept reports whether cs is still the statement kept for its text.
func (c *cachedConn) kept(cs *cachedStmt) bool {
	e, ok := c.byText[cs.text]
	return ok && e.Value.(*cachedStmt) == cs
}

func (c *cachedConn) ExecContext(ctx context.Context, text string, args []driver.NamedValue) (driver.Result, error) {
	cs, shared, err := c.stmtFor(ctx, text)
	if err != nil {
		return nil, err
	}
	res, err := cs.stmt.(driver.StmtExecContext).ExecContext(ctx, args)
	if !shared {
		_ = cs.stmt.Close()
	}
	return res, err
}

func (c *cachedConn) QueryContext(ctx context.Context, text string, args []driver.NamedValue) (driver.Rows, error) {
	cs, shared, err := c.stmtFor(ctx, text)
	if err != nil {
		return nil, err
	}
	rows, err := cs.stmt.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		if !shared {
			_ = cs.stmt.Close()
		}
		return nil, err
	}
	cs.busy = true
	return &cachedRows{Rows: rows, conn: c, cs: cs, shared: shared}, nil
}

// Close closes every kept statement, then the connection. database/sql
// closes a connection only when no rows of it are open, so every kept
// statement is idle here.
func (c *cachedConn) Close() error {
	var errs []error
	for e := c.order.Front(); e != nil; e = e.Next() {
		if cs := e.Value.(*cachedStmt); !cs.busy {
			errs = append(errs, cs.stmt.Close())
		}
	}
	c.byText, c.order = nil, list.New()
	return errors.Join(append(errs, c.sqliteConn.Close())...)
}

// cachedRows gives its statement back when closed.
type cachedRows struct {
	driver.Rows
	conn   *cachedConn
	cs     *cachedStmt
	shared bool
	closed bool
}

func (r *cachedRows) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	err := r.Rows.Close()
	r.cs.busy = false
	if !r.shared || r.conn.byText == nil || !r.conn.kept(r.cs) {
		// A one-off statement (its text was in use when these rows were
		// asked for).
		if cerr := r.cs.stmt.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// The column-type methods of modernc's rows, passed through (database/sql
// looks for them on the Rows it is given).

func (r *cachedRows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.Rows.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *cachedRows) ColumnTypeLength(i int) (int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeLength); ok {
		return t.ColumnTypeLength(i)
	}
	return 0, false
}

func (r *cachedRows) ColumnTypeNullable(i int) (bool, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *cachedRows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	if t, ok := r.Rows.(driver.RowsColumnTypePrecisionScale); ok {
		return t.ColumnTypePrecisionScale(i)
	}
	return 0, 0, false
}

func (r *cachedRows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.Rows.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}
