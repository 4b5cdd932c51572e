package store

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/matryer/is"
)

// withConn runs f on the store's one connection, as cachedConn.
func withConn(t *testing.T, db *sql.DB, f func(c *cachedConn)) {
	t.Helper()
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Raw(func(dc any) error {
		c, ok := dc.(*cachedConn)
		if !ok {
			return fmt.Errorf("connection is %T, not *cachedConn", dc)
		}
		f(c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Kept statements give the same answers as fresh ones: run again with
// other arguments, the same text inside a loop over its own rows, after
// a failed run (a constraint), after the schema changed under them; and
// the connection keeps at most stmtCacheSize of them.
func TestKeptStatements(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	st, err := Open(ctx, t.TempDir(), Options{})
	is.NoErr(err)
	defer st.Close()
	db := st.DB()
	_, err = db.ExecContext(ctx, `CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)`)
	is.NoErr(err)
	const ins = `INSERT INTO kv(k, v) VALUES(?, ?)`
	for i := range 5 {
		_, err := db.ExecContext(ctx, ins, fmt.Sprint("k", i), i)
		is.NoErr(err)
	}
	// The insert is kept once, and is the same statement on each run.
	var first any
	withConn(t, db, func(c *cachedConn) { first = c.byText[ins].Value.(*cachedStmt).stmt })
	_, err = db.ExecContext(ctx, ins, "k0", 9) // a duplicate key: fails
	is.True(err != nil)
	_, err = db.ExecContext(ctx, ins, "k5", 5) // and the statement still works
	is.NoErr(err)
	withConn(t, db, func(c *cachedConn) { is.Equal(c.byText[ins].Value.(*cachedStmt).stmt, first) })

	// The same query inside a loop over its own rows: each gets its own
	// statement, and every answer is right.
	const get = `SELECT v FROM kv WHERE k >= ? ORDER BY k`
	tx, err := db.BeginTx(ctx, nil)
	is.NoErr(err)
	rows, err := tx.QueryContext(ctx, get, "k0")
	is.NoErr(err)
	var outer []int
	for rows.Next() {
		var v int
		is.NoErr(rows.Scan(&v))
		outer = append(outer, v)
		var inner int
		is.NoErr(tx.QueryRowContext(ctx, get, fmt.Sprint("k", v)).Scan(&inner))
		is.Equal(inner, v)
	}
	is.NoErr(rows.Err())
	is.NoErr(rows.Close())
	is.NoErr(tx.Commit())
	is.Equal(outer, []int{0, 1, 2, 3, 4, 5})

	// A schema change: the kept SELECT * sees the new column.
	const all = `SELECT * FROM kv WHERE k = ?`
	cols := func() []string {
		rows, err := db.QueryContext(ctx, all, "k1")
		is.NoErr(err)
		defer rows.Close()
		c, err := rows.Columns()
		is.NoErr(err)
		return c
	}
	is.Equal(len(cols()), 2)
	_, err = db.ExecContext(ctx, `ALTER TABLE kv ADD COLUMN note TEXT`)
	is.NoErr(err)
	is.Equal(len(cols()), 3)

	// Bounded: many distinct texts keep at most stmtCacheSize.
	for i := range stmtCacheSize + 50 {
		var n int
		is.NoErr(db.QueryRowContext(ctx, fmt.Sprintf(`SELECT %d`, i)).Scan(&n))
		is.Equal(n, i)
	}
	withConn(t, db, func(c *cachedConn) {
		is.Equal(len(c.byText), stmtCacheSize)
		is.Equal(c.order.Len(), stmtCacheSize)
	})
}
