package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/matryer/is"
	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store/pgtest"
)

type pingArgs struct{ N int }

func (pingArgs) Kind() string { return "ping" }

// A River job inserted in a store transaction on PostgreSQL (through
// pgDriver's connTx) commits with it and rolls back with it, also when
// River nests a savepoint for a unique insert.
func TestPostgresRiverInsertJoinsStoreTx(t *testing.T) {
	is := is.New(t)
	st, _ := openKind(t, "postgres")
	ctx := context.Background()
	client, err := river.NewClient(st.RiverDriver(), &river.Config{})
	is.NoErr(err)
	insert := func(n int, fail bool) error {
		return st.InTx(ctx, func(tx *Tx) error {
			if err := tx.AddEvent(ctx, "", "", "ping", "before insert"); err != nil {
				return err
			}
			opts := &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}}
			if _, err := client.InsertTx(ctx, tx.SQL(), pingArgs{N: n}, opts); err != nil {
				return err
			}
			if fail {
				return errors.New("boom")
			}
			return tx.AddEvent(ctx, "", "", "ping", "after insert")
		})
	}
	is.True(insert(1, true) != nil)
	is.NoErr(insert(2, false))
	is.NoErr(insert(2, false)) // unique: skipped, the transaction still commits
	var jobs []int
	rows, err := st.db.QueryContext(ctx, `SELECT (args->>'N')::int FROM river_job WHERE kind = 'ping' ORDER BY id`)
	is.NoErr(err)
	for rows.Next() {
		var n int
		is.NoErr(rows.Scan(&n))
		jobs = append(jobs, n)
	}
	is.NoErr(rows.Err())
	is.Equal(jobs, []int{2})
	var events int
	is.NoErr(st.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM event WHERE kind = 'ping'`).Scan(&events))
	is.Equal(events, 4) // two committed transactions, two events each
}

// Several processes opening one new PostgreSQL database at once migrate
// it once (the advisory migrate lock) and all open it.
func TestPostgresConcurrentOpen(t *testing.T) {
	is := is.New(t)
	dsn := pgtest.DSN(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := Open(context.Background(), filepath.Join(t.TempDir(), "home"), Options{Database: dsn})
			if err == nil {
				st.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		is.NoErr(err)
	}
}

// A PostgreSQL database written by a newer grove is refused, unchanged.
func TestPostgresNewerSchemaIsRefused(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	dsn, home := pgtest.DSN(t), t.TempDir()
	st, err := Open(ctx, home, Options{Database: dsn})
	is.NoErr(err)
	defer st.Close()
	_, err = st.db.ExecContext(ctx, `UPDATE grove_meta SET value = '999' WHERE key = 'schema_version'`)
	is.NoErr(err)
	_, err = Open(ctx, home, Options{Database: dsn})
	var ue *grove.UserError
	is.True(errors.As(err, &ue))
	var v string
	is.NoErr(st.db.QueryRowContext(ctx, `SELECT value FROM grove_meta WHERE key = 'schema_version'`).Scan(&v))
	is.Equal(v, "999")
}

// A URL that is not postgres:// is a usage error naming the fix.
func TestDatabaseMustBePostgresURL(t *testing.T) {
	is := is.New(t)
	_, err := Open(context.Background(), t.TempDir(), Options{Database: "mysql://x"})
	is.True(errors.Is(err, grove.ErrUsage))
}

// Events read back on both databases, all of them (no LIMIT) and after an
// id (bounded); PostgreSQL refused SQLite's LIMIT -1.
func TestEventsOnBothDatabases(t *testing.T) {
	eachDB(t, func(t *testing.T, st *Store) {
		is := is.New(t)
		ctx := context.Background()
		for _, m := range []string{"one", "two", "three"} {
			is.NoErr(st.InTx(ctx, func(tx *Tx) error { return tx.AddEvent(ctx, "tev", "", "note", m) }))
		}
		evs, err := st.Events(ctx, "tev", 0)
		is.NoErr(err)
		is.Equal(len(evs), 3)
		is.Equal(evs[2].Message, "three")
		evs, err = st.Events(ctx, "tev", evs[0].ID)
		is.NoErr(err)
		is.Equal(len(evs), 2)
	})
}

// Many processes (stores) submitting at once on one PostgreSQL database:
// every task and its job commit, none twice, with no serialization error
// or deadlock reaching a caller (grove's advisory write lock orders the
// transactions; River's inserts join them).
func TestPostgresConcurrentSubmitters(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	const submitters, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, submitters)
	for s := range submitters {
		host := []string{"box-a", "box-b"}[s%2]
		st, err := Open(ctx, t.TempDir(), Options{Database: dsn, Host: host})
		is.NoErr(err)
		t.Cleanup(func() { st.Close() })
		client, err := river.NewClient(st.RiverDriver(), &river.Config{})
		is.NoErr(err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("t%02d%03d", s, i)
				err := st.InTx(ctx, func(tx *Tx) error {
					repo, err := tx.UpsertRepo(ctx, grove.Repo{Path: "/src/app", CommonDir: "/src/app/.git", DefaultBranch: "main"})
					if err != nil {
						return err
					}
					if _, _, err := tx.InsertTask(ctx, grove.Task{ID: id, RepoID: repo, BaseRef: "main", BaseCommit: "abc",
						TargetBranch: "main", Argv: []string{"true"}, Apply: grove.ApplyManual, State: grove.StateQueued}); err != nil {
						return err
					}
					if err := tx.AddEvent(ctx, id, "", "submitted", "x"); err != nil {
						return err
					}
					_, err = client.InsertTx(ctx, tx.SQL(), pingArgs{N: s*1000 + i}, nil)
					return err
				})
				if err != nil {
					errs <- fmt.Errorf("submit %s: %w", id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		is.NoErr(err)
	}
	check, err := Open(ctx, t.TempDir(), Options{Database: dsn, Host: "box-a"})
	is.NoErr(err)
	defer check.Close()
	counts, err := check.CountTasks(ctx)
	is.NoErr(err)
	is.Equal(counts[grove.StateQueued], submitters*each)
	var jobs, distinct int
	is.NoErr(check.db.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(DISTINCT args->>'N') FROM river_job WHERE kind = 'ping'`).Scan(&jobs, &distinct))
	is.Equal(jobs, submitters*each)
	is.Equal(distinct, submitters*each)
	a, err := check.ListTasks(ctx, TaskFilter{Host: "box-a"})
	is.NoErr(err)
	is.Equal(len(a), submitters*each/2)
}
