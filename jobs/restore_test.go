package jobs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// A forced close, as CloseWorker does it, then Restore: same files, same
// status, a new live row; refusals leave everything as it was.
func TestRestore(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, wt := e.task(grove.StateReview)
	writeT(t, filepath.Join(wt, "README"), "edited\n")
	writeT(t, filepath.Join(wt, "staged.txt"), "staged\n")
	gitT(t, wt, "add", "staged.txt")
	writeT(t, filepath.Join(wt, "key.secret"), "ignored, not reproducible\n")
	status := gitT(t, wt, "status", "--porcelain", "--ignored")

	_, err := Restore(e.ctx, e.d, id, "")
	is.True(errors.Is(err, grove.ErrNotFound)) // no snapshot yet

	ws, err := e.st.TaskWorkspace(e.ctx, id)
	is.NoErr(err)
	_, err = e.repo.Snapshot(e.ctx, wt, SnapshotRef(id), false)
	is.NoErr(err)
	is.NoErr(e.repo.RemoveWorktree(e.ctx, wt, ws.Branch))
	is.NoErr(e.st.InTx(e.ctx, func(tx *store.Tx) error {
		if err := tx.SetWorkspaceSnapshot(e.ctx, ws.ID, SnapshotRef(id)); err != nil {
			return err
		}
		return tx.ArchiveWorkspace(e.ctx, ws.ID)
	}))
	is.True(!pathExists(wt))

	got, err := Restore(e.ctx, e.d, id, "")
	is.NoErr(err)
	is.Equal(got.Path, wt)
	is.Equal(got.Branch, TaskBranch(id))
	is.Equal(got.State, grove.WorkspaceReady)
	is.True(got.ID != ws.ID) // a new row; the old one stays archived
	is.Equal(read(t, filepath.Join(wt, "README")), "edited\n")
	is.Equal(read(t, filepath.Join(wt, "key.secret")), "ignored, not reproducible\n")
	is.Equal(gitT(t, wt, "status", "--porcelain", "--ignored"), status)
	now, err := e.st.TaskWorkspace(e.ctx, id)
	is.NoErr(err)
	is.Equal(now.ID, got.ID)
	is.Equal(now.SnapshotRef, SnapshotRef(id))
	is.Equal(e.events(id, "restored"), 1)

	// While it is there: refused; elsewhere: fine, on a fresh branch name.
	_, err = Restore(e.ctx, e.d, id, "")
	is.True(errors.Is(err, grove.ErrConflict))
	other := filepath.Join(t.TempDir(), "other")
	got2, err := Restore(e.ctx, e.d, id, other)
	is.NoErr(err)
	is.Equal(got2.Branch, TaskBranch(id)+"-restored")
	is.Equal(gitT(t, other, "status", "--porcelain", "--ignored"), status)

	// A non-empty target is refused and left alone.
	full := filepath.Join(t.TempDir(), "full")
	writeT(t, filepath.Join(full, "mine"), "x")
	_, err = Restore(e.ctx, e.d, id, full)
	is.True(errors.Is(err, grove.ErrConflict))
	ents, err := os.ReadDir(full)
	is.NoErr(err)
	is.Equal(len(ents), 1)
}
