package store

import (
	"context"
	"testing"

	"github.com/grove-dev/grove"
	"github.com/matryer/is"
)

// A version 3 database (a task table without the options column) gets it
// when opened; its tasks read with no options.
func TestTaskOptionsColumnUpgradeFromV3(t *testing.T) {
	is := is.New(t)
	st, home := openTemp(t)
	_, err := st.db.Exec(`INSERT INTO repo(path, common_dir, default_branch, created_at) VALUES('/r', '/r/.git', 'main', 0);
		ALTER TABLE task DROP COLUMN options;
		INSERT INTO task(id, repo_id, base_ref, base_commit, target_branch, argv, env, path_env, timeout_ms,
			apply_policy, state, created_at, updated_at)
			VALUES('t00000001', 1, 'main', 'abc', 'main', '["a"]', '{}', '/bin', 0, 'manual', 'queued', 0, 0);
		UPDATE grove_meta SET value = '3' WHERE key = 'schema_version'`)
	is.NoErr(err)
	st.Close()
	st, err = Open(context.Background(), home, Options{})
	is.NoErr(err)
	defer st.Close()
	task, err := st.Task(context.Background(), "t00000001")
	is.NoErr(err)
	is.Equal(task.Options, grove.TaskOptions{})
	is.Equal(task.Argv, []string{"a"})
	var decl string
	is.NoErr(st.db.QueryRow(`SELECT dflt_value FROM pragma_table_info('task') WHERE name = 'options'`).Scan(&decl))
	is.Equal(decl, "'{}'")
}
