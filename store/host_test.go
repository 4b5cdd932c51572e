package store

import (
	"context"
	"testing"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store/pgtest"
)

// A version 5 database (a repo table without host) gets the column when
// opened, and its repositories (and their tasks) belong to the host that
// opened it.
func TestRepoHostColumnUpgradeFromV5(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	st, home := openTemp(t)
	_, err := st.db.Exec(`ALTER TABLE repo DROP COLUMN host;
		INSERT INTO repo(path, common_dir, default_branch, created_at) VALUES('/r', '/r/.git', 'main', 0);
		INSERT INTO task(id, repo_id, base_ref, base_commit, target_branch, argv, env, path_env, timeout_ms, apply_policy, state, created_at, updated_at)
		VALUES('tv5', 1, 'main', 'abc', 'main', '["true"]', '{}', '', 0, 'manual', 'queued', 0, 0);
		UPDATE grove_meta SET value = '5' WHERE key = 'schema_version'`)
	is.NoErr(err)
	st.Close()
	st, err = Open(ctx, home, Options{Host: "box-a"})
	is.NoErr(err)
	defer st.Close()
	r, err := st.Repo(ctx, 1)
	is.NoErr(err)
	is.Equal(r.Host, "box-a")
	task, err := st.Task(ctx, "tv5")
	is.NoErr(err)
	is.Equal(task.Host, "box-a")
}

// On PostgreSQL one path is a repository per host; a HostScoped store
// lists only its host's repositories and tasks can be listed by host.
func TestReposPerHostOnPostgres(t *testing.T) {
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
	add := func(st *Store, id string) {
		is.NoErr(st.InTx(ctx, func(tx *Tx) error {
			repo, err := tx.UpsertRepo(ctx, grove.Repo{Path: "/src/app", CommonDir: "/src/app/.git", DefaultBranch: "main"})
			if err != nil {
				return err
			}
			_, _, err = tx.InsertTask(ctx, grove.Task{ID: id, RepoID: repo, BaseRef: "main", BaseCommit: "abc",
				TargetBranch: "main", Argv: []string{"true"}, Apply: grove.ApplyManual, State: grove.StateQueued})
			if err != nil {
				return err
			}
			host, err := tx.TaskHost(ctx, id)
			is.Equal(host, st.Host())
			return err
		}))
	}
	add(a, "ta1")
	add(b, "tb1")
	add(a, "ta2")
	all, err := a.Repos(ctx)
	is.NoErr(err)
	is.Equal(len(all), 2) // same path, two hosts
	mine, err := a.HostScoped().Repos(ctx)
	is.NoErr(err)
	is.Equal(len(mine), 1)
	is.Equal(mine[0].Host, "box-a")
	ra, err := b.RepoOnHost(ctx, "box-a", "/src/app")
	is.NoErr(err)
	is.Equal(ra.ID, mine[0].ID)
	tasks, err := b.ListTasks(ctx, TaskFilter{Host: "box-a"})
	is.NoErr(err)
	is.Equal(len(tasks), 2)
	for _, task := range tasks {
		is.Equal(task.Host, "box-a")
	}
}
