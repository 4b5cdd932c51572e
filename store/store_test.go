package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	st, err := Open(context.Background(), home, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, home
}

func TestOpenCreatesPrivateHomeAndDB(t *testing.T) {
	is := is.New(t)
	st, home := openTemp(t)
	var mode string
	is.NoErr(st.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode))
	is.Equal(mode, "wal") // set once by the migration, persistent in the file
	fi, err := os.Stat(home)
	is.NoErr(err)
	is.Equal(fi.Mode().Perm(), os.FileMode(0o700))
	fi, err = os.Stat(filepath.Join(home, "grove.db"))
	is.NoErr(err)
	is.Equal(fi.Mode().Perm(), os.FileMode(0o600))
}

func TestOpenIsIdempotentAndConcurrent(t *testing.T) {
	is := is.New(t)
	home := filepath.Join(t.TempDir(), "home")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := Open(context.Background(), home, Options{})
			if err == nil {
				err = st.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		is.NoErr(err)
	}
	st, err := Open(context.Background(), home, Options{})
	is.NoErr(err)
	defer st.Close()
	var n int
	is.NoErr(st.db.QueryRow(`SELECT COUNT(*) FROM river_migration`).Scan(&n))
	is.Equal(n, riverTargetVersion)
}

// A database of schema version 1 is brought up to date when opened: the
// listing index of version 2 replaces the old one; tasks stay.
func TestOlderSchemaIsUpgraded(t *testing.T) {
	is := is.New(t)
	st, home := openTemp(t)
	_, err := st.db.Exec(`DROP INDEX task_created_id; CREATE INDEX task_created ON task(created_at);
		UPDATE grove_meta SET value = '1' WHERE key = 'schema_version'`)
	is.NoErr(err)
	st.Close()
	st, err = Open(context.Background(), home, Options{})
	is.NoErr(err)
	defer st.Close()
	var v string
	is.NoErr(st.db.QueryRow(`SELECT value FROM grove_meta WHERE key = 'schema_version'`).Scan(&v))
	is.Equal(v, fmt.Sprint(grove.SchemaVersion))
	var indexes []string
	rows, err := st.db.Query(`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'task' AND name LIKE 'task_created%'`)
	is.NoErr(err)
	for rows.Next() {
		var n string
		is.NoErr(rows.Scan(&n))
		indexes = append(indexes, n)
	}
	is.NoErr(rows.Err())
	is.Equal(indexes, []string{"task_created_id"})
}

func TestNewerSchemaIsRefusedUntouched(t *testing.T) {
	is := is.New(t)
	st, home := openTemp(t)
	_, err := st.db.Exec(`UPDATE grove_meta SET value = '99' WHERE key = 'schema_version'`)
	is.NoErr(err)
	st.Close()
	_, err = Open(context.Background(), home, Options{})
	is.True(err != nil)
	var ue *grove.UserError
	is.True(errors.As(err, &ue))
	is.Equal(ue.Msg, fmt.Sprintf("database %s has schema version 99, newer than this grove's %d", filepath.Join(home, "grove.db"), grove.SchemaVersion))
	// Nothing was changed.
	db, err := sql.Open("sqlite", filepath.Join(home, "grove.db"))
	is.NoErr(err)
	defer db.Close()
	var v string
	is.NoErr(db.QueryRow(`SELECT value FROM grove_meta WHERE key = 'schema_version'`).Scan(&v))
	is.Equal(v, "99")
}

func TestTaskRoundTripAndIdempotencyKey(t *testing.T) {
	eachDB(t, func(t *testing.T, st *Store) {
		is := is.New(t)
		ctx := context.Background()
		task := grove.Task{ID: grove.NewTaskID(), BaseRef: "main", BaseCommit: "abc", TargetBranch: "main",
			Argv: []string{"agent", "--prompt", "a b"}, Env: map[string]string{"K": "V"}, Apply: grove.ApplyManual,
			IdemKey: "job-1", State: grove.StateQueued}
		var first grove.Task
		err := st.InTx(ctx, func(tx *Tx) error {
			id, err := tx.UpsertRepo(ctx, grove.Repo{Path: "/r", CommonDir: "/r/.git", DefaultBranch: "main"})
			if err != nil {
				return err
			}
			task.RepoID = id
			var created bool
			first, created, err = tx.InsertTask(ctx, task)
			is.True(created)
			return err
		})
		is.NoErr(err)
		again := task
		again.ID = grove.NewTaskID()
		err = st.InTx(ctx, func(tx *Tx) error {
			got, created, err := tx.InsertTask(ctx, again)
			is.True(!created)
			is.Equal(got.ID, first.ID)
			return err
		})
		is.NoErr(err)
		got, err := st.Task(ctx, first.ID)
		is.NoErr(err)
		is.Equal(got.Argv, task.Argv)
		is.Equal(got.Env, task.Env)
		is.Equal(got.RepoPath, "/r")
		tasks, err := st.ListTasks(ctx, TaskFilter{})
		is.NoErr(err)
		is.Equal(len(tasks), 1)

		// Prefix resolution and unknown ids.
		id, err := st.ResolveTaskID(ctx, first.ID[:5])
		is.NoErr(err)
		is.Equal(id, first.ID)
		_, err = st.ResolveTaskID(ctx, "nope")
		is.True(errors.Is(err, grove.ErrNotFound))

		// Guarded state changes report a lost race.
		err = st.InTx(ctx, func(tx *Tx) error {
			ok, err := tx.SetState(ctx, first.ID, []grove.TaskState{grove.StateRunning}, grove.StateDiffing, "")
			is.True(!ok)
			return err
		})
		is.NoErr(err)
	})
}

// AfterCommit hooks run once the transaction is committed (its rows are
// visible to the hook), and never after a rollback.
func TestAfterCommit(t *testing.T) {
	eachDB(t, func(t *testing.T, st *Store) {
		is := is.New(t)
		ctx := context.Background()
		var seen []string
		err := st.InTx(ctx, func(tx *Tx) error {
			id, err := tx.UpsertRepo(ctx, grove.Repo{Path: "/r", CommonDir: "/r/.git", DefaultBranch: "main"})
			if err != nil {
				return err
			}
			if _, _, err := tx.InsertTask(ctx, grove.Task{ID: "tafter01", RepoID: id, BaseRef: "main", BaseCommit: "abc",
				TargetBranch: "main", Argv: []string{"true"}, Apply: grove.ApplyManual, State: grove.StateQueued}); err != nil {
				return err
			}
			tx.AfterCommit(func() {
				_, err := st.Task(ctx, "tafter01")
				seen = append(seen, fmt.Sprintf("committed: %v", err == nil))
			})
			return nil
		})
		is.NoErr(err)
		is.Equal(seen, []string{"committed: true"})
		err = st.InTx(ctx, func(tx *Tx) error {
			tx.AfterCommit(func() { seen = append(seen, "rolled back") })
			return errors.New("boom")
		})
		is.True(err != nil)
		is.Equal(len(seen), 1)
	})
}
