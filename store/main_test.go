package store

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/grove-dev/grove/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// eachDB runs fn as two subtests, on a fresh SQLite store ("sqlite") and
// on a fresh database of the test binary's PostgreSQL ("postgres").
func eachDB(t *testing.T, fn func(t *testing.T, st *Store)) {
	t.Helper()
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			st, _ := openKind(t, kind)
			fn(t, st)
		})
	}
}

// openKind opens a fresh store on SQLite in a temporary home, or on a new
// database of the test PostgreSQL (with a temporary home beside it).
func openKind(t *testing.T, kind string) (*Store, string) {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	opts := Options{}
	if kind == "postgres" {
		opts.Database = pgtest.DSN(t)
	}
	st, err := Open(context.Background(), home, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, home
}
