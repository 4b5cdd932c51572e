package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store/pgtest"
)

// A commit by another connection wakes a waiter long before its fallback
// interval; without one it returns at the interval; a canceled context
// ends it with the context's error.
func TestWatchCommits(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) { testWatchCommits(t, kind) })
	}
}

func testWatchCommits(t *testing.T, kind string) {
	is := is.New(t)
	home := filepath.Join(t.TempDir(), "home")
	opts := Options{}
	if kind == "postgres" {
		opts.Database = pgtest.DSN(t)
	}
	st, err := Open(context.Background(), home, opts)
	is.NoErr(err)
	defer st.Close()
	other, err := Open(context.Background(), home, opts)
	is.NoErr(err)
	defer other.Close()
	w := st.WatchCommits()
	defer w.Close()
	ctx := context.Background()

	start := time.Now()
	is.NoErr(w.Wait(ctx, 150*time.Millisecond)) // nothing happens: the interval
	is.True(time.Since(start) >= 150*time.Millisecond)

	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = other.InTx(ctx, func(tx *Tx) error {
			_, err := tx.UpsertRepo(ctx, grove.Repo{Path: "/r", CommonDir: "/r/.git", DefaultBranch: "main"})
			return err
		})
	}()
	start = time.Now()
	is.NoErr(w.Wait(ctx, time.Minute))
	is.True(time.Since(start) < 30*time.Second) // woken by the commit, not the minute

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	is.True(errors.Is(w.Wait(cctx, time.Minute), context.Canceled))
}
