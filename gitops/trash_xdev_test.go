package gitops

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/matryer/is"
)

// otherFS returns a directory on another filesystem than t.TempDir(), or
// skips the test.
func otherFS(t *testing.T) string {
	t.Helper()
	var a, b syscall.Stat_t
	tmp := t.TempDir()
	if syscall.Stat(tmp, &a) != nil || syscall.Stat("/dev/shm", &b) != nil || a.Dev == b.Dev || syscall.Access("/dev/shm", 2) != nil {
		t.Skip("no second filesystem (/dev/shm) to test with")
	}
	dir, err := os.MkdirTemp("/dev/shm", "gitops-xdev-")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Across filesystems: git's admin dir (repository on one filesystem) is
// copied into the trash (on another) and back on restore; a worktree
// directory that cannot be renamed into the trash is removed by the
// gate's answer alone, and the result says so.
func TestTrashAcrossFilesystems(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	shm := otherFS(t)
	dir := filepath.Join(shm, "repo")
	git(t, "", "init", "-q", "-b", "main", dir)
	write(t, filepath.Join(dir, "README"), "hello\n")
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "init")
	r, err := Open(ctx, dir)
	is.NoErr(err)
	trash := filepath.Join(t.TempDir(), "trash")

	// The worktree next to the trash, the repository elsewhere.
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/x", "main"))
	write(t, filepath.Join(wt, "work.txt"), "uncommitted\n")
	git(t, wt, "add", "work.txt")
	before := fullStateOf(t, r, wt, "grove/x")
	e, err := r.Retire(ctx, wt, "grove/x", trash, Report{}, RetireOptions{Force: true})
	is.NoErr(err)
	is.Equal(e.NotKept, "")
	is.True(exists(filepath.Join(e.Dir, trashAdmin, "index")))
	is.True(!exists(filepath.Join(e.Dir, trashAdmin+".copy")))
	_, err = RestoreTrash(ctx, e.Dir, "")
	is.NoErr(err)
	assertSameState(t, before, fullStateOf(t, r, wt, "grove/x"))

	// A worktree on the repository's filesystem, the trash elsewhere:
	// not kept, said so, removed through the gate's answer alone.
	wt2 := filepath.Join(shm, "wt2")
	is.NoErr(r.CreateWorktree(ctx, wt2, "grove/y", "main"))
	rep := r.AtRisk(ctx, wt2, GateOptions{Branch: "grove/y"})
	is.True(rep.Safe)
	e, err = r.Retire(ctx, wt2, "grove/y", trash, rep, RetireOptions{})
	is.NoErr(err)
	is.True(strings.Contains(e.NotKept, "another filesystem"))
	is.True(gone(wt2))
	is.Equal(trashEntries(t, trash), nil)
}
