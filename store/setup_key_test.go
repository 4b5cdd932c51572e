package store

import (
	"context"
	"testing"

	"github.com/matryer/is"
)

// A version 4 database (a workspace table without setup_key) gets the
// column when opened; its workspaces read as never set up, and a key set
// afterwards reads back.
func TestSetupKeyColumnUpgradeFromV4(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	st, home := openTemp(t)
	_, err := st.db.Exec(`INSERT INTO repo(path, common_dir, default_branch, created_at) VALUES('/r', '/r/.git', 'main', 0);
		ALTER TABLE workspace DROP COLUMN setup_key;
		INSERT INTO workspace(repo_id, path, branch, base_commit, state, last_used_at) VALUES(1, '/w', 'grove/pool/x', 'abc', 'pool', 0);
		UPDATE grove_meta SET value = '4' WHERE key = 'schema_version'`)
	is.NoErr(err)
	st.Close()
	st, err = Open(ctx, home, Options{})
	is.NoErr(err)
	defer st.Close()
	ws, err := st.PoolEntries(ctx, 1)
	is.NoErr(err)
	is.Equal(len(ws), 1)
	is.Equal(ws[0].SetupKey, "")
	is.NoErr(st.InTx(ctx, func(tx *Tx) error { return tx.SetSetupKey(ctx, ws[0].ID, "k1") }))
	ws, err = st.PoolEntries(ctx, 1)
	is.NoErr(err)
	is.Equal(ws[0].SetupKey, "k1")
}
