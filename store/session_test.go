package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

func newSession(t *testing.T, st *Store, id string) {
	t.Helper()
	ctx := context.Background()
	err := st.InTx(ctx, func(tx *Tx) error {
		repoID, err := tx.UpsertRepo(ctx, grove.Repo{Path: "/r", CommonDir: "/r/.git", DefaultBranch: "main"})
		if err != nil {
			return err
		}
		return tx.InsertSession(ctx, grove.Session{ID: id, RepoID: repoID, BaseCommit: "abc", TargetBranch: "main",
			Serve: []string{"svc"}, Restart: grove.RestartOnFailure, MaxRestarts: 3})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A version 2 database (a session table without the version 3 columns)
// gets them when opened; its sessions read with the defaults.
func TestSessionColumnsUpgradeFromV2(t *testing.T) {
	is := is.New(t)
	st, home := openTemp(t)
	_, err := st.db.Exec(`DROP INDEX session_port; DROP TABLE session;
		CREATE TABLE session (id TEXT PRIMARY KEY, repo_id INTEGER NOT NULL REFERENCES repo(id), state TEXT NOT NULL,
		base_commit TEXT NOT NULL, target_branch TEXT NOT NULL, serve_argv TEXT, port INTEGER,
		created_at INTEGER NOT NULL, last_used_at INTEGER NOT NULL, archived_at INTEGER);
		INSERT INTO repo(path, common_dir, default_branch, created_at) VALUES('/r', '/r/.git', 'main', 0);
		INSERT INTO session(id, repo_id, state, base_commit, target_branch, port, created_at, last_used_at)
			VALUES('old', 1, 'live', 'abc', 'main', 20000, 0, 0);
		UPDATE grove_meta SET value = '2' WHERE key = 'schema_version'`)
	is.NoErr(err)
	st.Close()
	st, err = Open(context.Background(), home, Options{})
	is.NoErr(err)
	defer st.Close()
	s, err := st.Session(context.Background(), "old")
	is.NoErr(err)
	is.Equal(s.State, grove.SessionLive)
	is.Equal(s.Port, 20000)
	is.Equal(s.Restart, grove.RestartNo)
	is.Equal(s.MaxRestarts, 5)
	is.Equal(s.Reason, "")
}

// Moves follow the transition table; a move records the reason and a
// compare-and-swap on the state refuses a stale one.
func TestMoveSessionFollowsTable(t *testing.T) {
	eachDB(t, func(t *testing.T, st *Store) {
		is := is.New(t)
		ctx := context.Background()
		newSession(t, st, "s")
		s, err := st.Session(ctx, "s")
		is.NoErr(err)
		is.Equal(s.State, grove.SessionStarting)
		is.Equal(s.Restart, grove.RestartOnFailure)
		is.Equal(s.MaxRestarts, 3)
		move := func(from []grove.SessionState, to, reason string) bool {
			var ok bool
			is.NoErr(st.InTx(ctx, func(tx *Tx) error {
				var err error
				ok, err = tx.MoveSession(ctx, "s", from, to, reason)
				return err
			}))
			return ok
		}
		is.True(move(nil, grove.SessionDead, "service exited with code 3"))
		s, _ = st.Session(ctx, "s")
		is.Equal(s.Reason, "service exited with code 3")
		is.True(!move([]grove.SessionState{grove.SessionStarting}, grove.SessionLive, "")) // stale: it is dead
		is.True(move(nil, grove.SessionClosed, ""))
		is.True(!move(nil, grove.SessionLive, "")) // closed -> live is not in the table
		is.True(!grove.SessionCanMove(grove.SessionEvicted, grove.SessionLive))
		is.True(grove.SessionCanMove(grove.SessionEvicted, grove.SessionStarting))
	})
}

// A lease skips ports something listens on and ports other sessions hold,
// prefers the session's last port, and a full range is a user error with
// the hint.
func TestLeasePort(t *testing.T) {
	eachDB(t, func(t *testing.T, st *Store) {
		is := is.New(t)
		ctx := context.Background()
		newSession(t, st, "a")
		newSession(t, st, "b")
		lease := func(id string, free func(int) bool) (int, error) {
			var p int
			err := st.InTx(ctx, func(tx *Tx) error {
				var err error
				p, err = tx.LeasePort(ctx, id, 100, 102, free)
				return err
			})
			return p, err
		}
		p, err := lease("a", func(p int) bool { return p != 100 }) // 100 has a squatter
		is.NoErr(err)
		is.Equal(p, 101)
		_, err = lease("b", func(p int) bool { return p != 100 && p != 102 })
		var ue *grove.UserError
		is.True(errors.As(err, &ue))
		is.True(ue.Hint != "")
		// a's lease expires while it is down; it asks for 101 again.
		is.NoErr(st.InTx(ctx, func(tx *Tx) error {
			if _, err := tx.MoveSession(ctx, "a", nil, grove.SessionEvicted, ""); err != nil {
				return err
			}
			keys, err := tx.ExpireLeases(ctx, st.now().Add(time.Second))
			is.Equal(keys, []string{"a"})
			return err
		}))
		s, _ := st.Session(ctx, "a")
		is.Equal(s.Port, 0)
		is.Equal(s.LastPort, 101)
		p, err = lease("a", nil)
		is.NoErr(err)
		is.Equal(p, 101)
	})
}
