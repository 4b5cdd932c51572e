package store

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store/pgtest"
)

// Reassign moves a queued task and its job to the target host's queue and
// wakes that queue's River producers in the same commit (River's insert
// notification), so the target fetches the job at once instead of at its
// next poll. A reassign that moves nothing notifies nobody.
func TestReassignWakesTheTargetQueue(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	open := func(host string) *Store {
		st, err := Open(ctx, t.TempDir(), Options{Database: dsn, Host: host})
		is.NoErr(err)
		t.Cleanup(func() { st.Close() })
		return st
	}
	a, b := open("box-a"), open("box-b")
	for _, st := range []*Store{a, b} {
		is.NoErr(st.InTx(ctx, func(tx *Tx) error {
			_, err := tx.UpsertRepo(ctx, grove.Repo{Path: "/src/app", CommonDir: "/src/app/.git", DefaultBranch: "main"})
			return err
		}))
	}
	is.NoErr(a.InTx(ctx, func(tx *Tx) error {
		repo, err := tx.UpsertRepo(ctx, grove.Repo{Path: "/src/app", CommonDir: "/src/app/.git", DefaultBranch: "main"})
		if err != nil {
			return err
		}
		_, _, err = tx.InsertTask(ctx, grove.Task{ID: "t1", RepoID: repo, BaseRef: "main", BaseCommit: "abc",
			TargetBranch: "main", Argv: []string{"true"}, Apply: grove.ApplyManual, State: grove.StateQueued})
		return err
	}))
	_, err := a.db.ExecContext(ctx, `INSERT INTO river_job(args, kind, queue, state, max_attempts, priority)
		VALUES('{"task_id": "t1"}', 'create_worktree', 'git_box-a', 'available', 5, 1)`)
	is.NoErr(err)

	listen, err := pgx.Connect(ctx, dsn)
	is.NoErr(err)
	defer listen.Close(ctx)
	_, err = listen.Exec(ctx, `LISTEN "public.river_insert"`)
	is.NoErr(err)

	out, err := a.Reassign(ctx, "box-a", "box-b", "create_worktree", "git_box-a", "git_box-b")
	is.NoErr(err)
	is.Equal(len(out), 1)
	is.True(out[0].Moved)
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := listen.WaitForNotification(wait)
	is.NoErr(err) // the target's queue was woken
	is.Equal(n.Payload, `{"queue":"git_box-b"}`)
	var queue string
	is.NoErr(a.db.QueryRowContext(ctx, `SELECT queue FROM river_job WHERE args->>'task_id' = 't1'`).Scan(&queue))
	is.Equal(queue, "git_box-b")

	// Nothing left to move: no notification.
	out, err = a.Reassign(ctx, "box-a", "box-b", "create_worktree", "git_box-a", "git_box-b")
	is.NoErr(err)
	is.Equal(len(out), 0)
	quiet, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	_, err = listen.WaitForNotification(quiet)
	is.True(err != nil)
}

// QueueWaiting sees a job waiting on its queue (available, scheduled or
// retryable), and nothing on another queue or once the job is running.
func TestQueueWaiting(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	st, err := Open(ctx, t.TempDir(), Options{})
	is.NoErr(err)
	defer st.Close()
	waiting := func(queue string) bool {
		var w bool
		is.NoErr(st.InTx(ctx, func(tx *Tx) error {
			var err error
			w, err = tx.QueueWaiting(ctx, queue)
			return err
		}))
		return w
	}
	is.True(!waiting("agent"))
	_, err = st.DB().ExecContext(ctx, `INSERT INTO river_job(args, kind, max_attempts, priority, queue, state, metadata, tags)
		VALUES('{}', 'run_agent', 3, 1, 'agent', 'available', '{}', '[]')`)
	is.NoErr(err)
	is.True(waiting("agent"))
	is.True(!waiting("git"))
	_, err = st.DB().ExecContext(ctx, `UPDATE river_job SET state = 'running'`)
	is.NoErr(err)
	is.True(!waiting("agent"))
	_, err = st.DB().ExecContext(ctx, `UPDATE river_job SET state = 'scheduled'`)
	is.NoErr(err)
	is.True(waiting("agent"))
}
