package store

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store/pgtest"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Two daemons claiming one host name on one database: the second is
// refused while the first one's heartbeat is fresh, a restart of the first
// (same instance) is not, a silent host is taken over, and the silent
// daemon's next heartbeat learns it lost the host. On both databases (the
// rows are the same; only PostgreSQL daemons call it).
func TestClaimHostRefusesASecondInstance(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			is := is.New(t)
			ctx := context.Background()
			clock := &fakeClock{t: time.UnixMilli(1_800_000_000_000)}
			home := filepath.Join(t.TempDir(), "home")
			opts := Options{Host: "box", Now: clock.now}
			if kind == "postgres" {
				opts.Database = pgtest.DSN(t)
			}
			open := func() *Store {
				st, err := Open(ctx, home, opts)
				is.NoErr(err)
				t.Cleanup(func() { st.Close() })
				return st
			}
			a, b := open(), open()
			const fresh = time.Minute
			is.NoErr(a.ClaimHost(ctx, "m1:/home/a", fresh, 100, clock.now()))
			is.NoErr(a.Heartbeat(ctx, 100, clock.now()))

			clock.add(50 * time.Second)
			err := b.ClaimHost(ctx, "m2:/home/b", fresh, 200, clock.now())
			is.True(errors.Is(err, grove.ErrDaemonRunning))
			is.True(strings.Contains(err.Error(), "host box is already served by another grove daemon (m1:/home/a, pid 100, seen 50s ago)"))
			is.True(strings.Contains(grove.HintOf(err), "--host"))

			// The same daemon restarted (kill -9, new pid) while its row is fresh.
			is.NoErr(a.ClaimHost(ctx, "m1:/home/a", fresh, 101, clock.now()))
			hosts, err := a.Hosts(ctx)
			is.NoErr(err)
			is.Equal(len(hosts), 1)
			is.Equal(hosts[0].Pid, 101)
			is.Equal(hosts[0].Instance, "m1:/home/a")

			// Silent for longer than fresh: another instance may take the name.
			clock.add(fresh + time.Second)
			is.NoErr(b.ClaimHost(ctx, "m2:/home/b", fresh, 200, clock.now()))
			err = a.Heartbeat(ctx, 101, clock.now())
			is.True(errors.Is(err, ErrHostTaken))
			is.NoErr(b.Heartbeat(ctx, 200, clock.now()))
			hosts, err = a.Hosts(ctx)
			is.NoErr(err)
			is.Equal(hosts[0].Instance, "m2:/home/b")
			is.Equal(hosts[0].Pid, 200)
		})
	}
}

// A version 6 database (a host table without instance) gets the column
// when opened, on either database; its rows carry no instance, so a daemon
// of the new grove takes over its host at once (an upgrade restarts within
// the window).
func TestHostInstanceColumnUpgradeFromV6(t *testing.T) {
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			is := is.New(t)
			ctx := context.Background()
			home, dsn := filepath.Join(t.TempDir(), "home"), ""
			if kind == "postgres" {
				dsn = pgtest.DSN(t)
			}
			st, err := Open(ctx, home, Options{Host: "box", Database: dsn})
			is.NoErr(err)
			now := time.Now().UnixMilli()
			for _, q := range []string{`ALTER TABLE host DROP COLUMN instance`,
				`INSERT INTO host(name, seen_at, started_at, pid) VALUES('box', ?, ?, 7)`,
				`UPDATE grove_meta SET value = '6' WHERE key = 'schema_version'`} {
				_, err := st.q.ExecContext(ctx, q, pickArgs(q, now, now)...)
				is.NoErr(err)
			}
			st.Close()
			st, err = Open(ctx, home, Options{Host: "box", Database: dsn})
			is.NoErr(err)
			defer st.Close()
			hosts, err := st.Hosts(ctx)
			is.NoErr(err)
			is.Equal(len(hosts), 1)
			is.Equal(hosts[0].Instance, "")
			is.Equal(hosts[0].Pid, 7)
			is.NoErr(st.ClaimHost(ctx, "m1:/home/a", time.Minute, 8, time.Now()))
		})
	}
}

// pickArgs is args when q has placeholders, else none.
func pickArgs(q string, args ...any) []any {
	if strings.Contains(q, "?") {
		return args
	}
	return nil
}
