package gitops

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// bareRemote makes an empty bare repository holding one unrelated ref
// (refs/heads/theirs) that a backup must never touch.
func bareRemote(t *testing.T, r *Repo) (string, string) {
	t.Helper()
	remote := filepath.Join(t.TempDir(), "backup.git")
	git(t, "", "init", "-q", "--bare", remote)
	head := git(t, r.Root, "rev-parse", "HEAD")
	git(t, r.Root, "push", "-q", remote, head+":refs/heads/theirs")
	return remote, head
}

func TestBackupPushIsIncrementalAndScoped(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	remote, theirs := bareRemote(t, r)
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/t1/work", "main"))
	write(t, filepath.Join(wt, "notes.txt"), "untracked work\n")
	var big strings.Builder
	for i := 0; big.Len() < 256<<10; i++ {
		fmt.Fprintf(&big, "%x\n", sha256.Sum256([]byte(strconv.Itoa(i)))) // does not compress
	}
	write(t, filepath.Join(wt, "big.txt"), big.String())
	_, err := r.Snapshot(ctx, wt, SnapshotsPrefix+"t1", false)
	is.NoErr(err)
	git(t, r.Root, "update-ref", "refs/grove/tasks/t2", "HEAD")
	ns, err := BackupNamespace("box1", RepoKey(r.Root))
	is.NoErr(err)

	live, err := r.SnapshotCommit(ctx, wt, SnapshotOptions{})
	is.NoErr(err)
	plan, err := r.PlanBackup(ctx, remote, ns, map[string]string{"t1": live})
	is.NoErr(err)
	is.Equal(len(plan.Refs), 5) // snapshot, task ref, live snapshot, catalog, catalog-edge
	is.True(plan.Objects > 0 && plan.Bytes > 0)
	is.NoErr(r.PushBackup(ctx, plan))
	got, err := RemoteRefs(ctx, r.Root, remote, "refs/")
	is.NoErr(err)
	is.Equal(got["refs/heads/theirs"], theirs) // untouched
	is.Equal(got[ns+"refs/grove/snapshots/t1"], git(t, r.Root, "rev-parse", SnapshotsPrefix+"t1"))
	is.Equal(got[ns+"live/t1"], live)
	is.Equal(len(got), 6)

	// Nothing changed: nothing to send, even with a new live snapshot
	// commit of the same worktree.
	// (another commit of the same tree, as a later run's would be)
	live2 := git(t, r.Root, "commit-tree", "-m", "later", "-p", "HEAD", live+"^{tree}")
	is.True(live2 != live)
	plan, err = r.PlanBackup(ctx, remote, ns, map[string]string{"t1": live2})
	is.NoErr(err)
	is.Equal(len(plan.Refs), 0)
	is.Equal(plan.Unchanged, 3)

	// One new snapshot: only it (and what it alone reaches) is sent; a
	// ref deleted here stays on the remote.
	write(t, filepath.Join(wt, "more.txt"), "more\n")
	_, err = r.Snapshot(ctx, wt, SnapshotsPrefix+"t3", false)
	is.NoErr(err)
	git(t, r.Root, "update-ref", "-d", "refs/grove/tasks/t2")
	plan, err = r.PlanBackup(ctx, remote, ns, nil)
	is.NoErr(err)
	is.Equal(len(plan.Refs), 3)
	is.Equal(plan.Refs[2].Name, ns+"refs/grove/snapshots/t3")
	is.Equal(plan.KeptRemote, 2) // tasks/t2 and live/t1
	t.Logf("second backup: %d objects, %d bytes", plan.Objects, plan.Bytes)
	is.True(plan.Objects <= 10) // a commit, a few trees, the new blob, the catalogs: not the whole worktree again
	before := dirBytes(t, filepath.Join(remote, "objects"))
	is.NoErr(r.PushBackup(ctx, plan))
	grew := dirBytes(t, filepath.Join(remote, "objects")) - before
	t.Logf("second backup: the remote grew by %d bytes", grew)
	is.True(grew < 32<<10) // not big.txt again (a sibling snapshot: see the catalog)
	got, err = RemoteRefs(ctx, r.Root, remote, "refs/")
	is.NoErr(err)
	is.Equal(len(got), 7)
	is.True(got[ns+"refs/grove/tasks/t2"] != "")

	// A snapshot retaken under the same name: the remote keeps the old one
	// as <name>@<12 hex>, even when it is gone from here.
	old := git(t, r.Root, "rev-parse", SnapshotsPrefix+"t1")
	write(t, filepath.Join(wt, "notes.txt"), "changed\n")
	_, err = r.Snapshot(ctx, wt, SnapshotsPrefix+"t1", false)
	is.NoErr(err)
	git(t, r.Root, "update-ref", "-d", SnapshotsPrefix+"t3") // (t3's objects: not all reachable here any more)
	plan, err = r.PlanBackup(ctx, remote, ns, nil)
	is.NoErr(err)
	is.NoErr(r.PushBackup(ctx, plan))
	got, err = RemoteRefs(ctx, r.Root, remote, "refs/")
	is.NoErr(err)
	is.Equal(got[ns+"refs/grove/snapshots/t1@"+old[:12]], old)
	is.Equal(got[ns+"refs/grove/snapshots/t1"], git(t, r.Root, "rev-parse", SnapshotsPrefix+"t1"))
	is.Equal(len(got), 8)
	refs, err := r.RefsUnder(ctx, CatalogRefPrefix)
	is.NoErr(err)
	is.Equal(len(refs), 1) // the catalog; no temporary ref left

	// Again, with the old snapshot commit pruned from this repository: it
	// is fetched back from the remote to be kept there under its @ name.
	old = git(t, r.Root, "rev-parse", SnapshotsPrefix+"t1")
	write(t, filepath.Join(wt, "notes.txt"), "changed again\n")
	_, err = r.Snapshot(ctx, wt, SnapshotsPrefix+"t1", false)
	is.NoErr(err)
	git(t, r.Root, "reflog", "expire", "--expire=now", "--all")
	git(t, r.Root, "gc", "-q", "--prune=now")
	_, err = run(ctx, r.Root, "cat-file", "-e", old)
	is.True(err != nil) // gone here
	plan, err = r.PlanBackup(ctx, remote, ns, nil)
	is.NoErr(err)
	is.NoErr(r.PushBackup(ctx, plan))
	got, err = RemoteRefs(ctx, r.Root, remote, "refs/")
	is.NoErr(err)
	is.Equal(got[ns+"refs/grove/snapshots/t1@"+old[:12]], old)
	refs, err = r.RefsUnder(ctx, CatalogRefPrefix)
	is.NoErr(err)
	is.Equal(len(refs), 1)
}

func TestBackupRemoteErrors(t *testing.T) {
	ctx := ctxT(t)
	r := newRepo(t)
	ns, err := BackupNamespace("box1", RepoKey(r.Root))
	if err != nil {
		t.Fatal(err)
	}
	notGit := t.TempDir()
	for _, c := range []struct{ remote, want string }{
		{notGit, "is not a git repository"},
		{filepath.Join(notGit, "missing.git"), "is not a git repository"},
		{"http://127.0.0.1:1/x.git", "cannot reach backup remote"},
	} {
		t.Run(c.want, func(t *testing.T) {
			_, err := r.PlanBackup(ctx, c.remote, ns, nil)
			var ue *grove.UserError
			if !errors.As(err, &ue) || !strings.Contains(ue.Msg, c.want) || ue.Hint == "" || strings.Contains(ue.Msg, "\n") {
				t.Fatalf("remote %s: got %v, want a one-line user error with %q and a hint", c.remote, err, c.want)
			}
		})
	}
	if _, err := BackupNamespace("a/b", "k"); err == nil {
		t.Fatal("a box name with a slash was accepted")
	}
}

// TestBackupRestoreInClone backs up a live snapshot of an at-risk
// worktree (every kind of state, a stash, a nested repository with a
// commit), then restores it in a fresh clone, with the original gone.
func TestBackupRestoreInClone(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	remote, _ := bareRemote(t, r)
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/t9/work", "main"))
	messUp(t, wt)
	write(t, filepath.Join(wt, "stashed.txt"), "stashed\n")
	git(t, wt, "stash", "push", "-q", "-u", "-m", "wip", "--", "stashed.txt")
	nested := filepath.Join(wt, "vendor", "lib")
	git(t, "", "init", "-q", "-b", "main", nested)
	write(t, filepath.Join(nested, "lib.go"), "package lib\n")
	git(t, nested, "add", "-A")
	git(t, nested, "commit", "-q", "-m", "nested work")
	want := treeFiles(t, wt)
	delete(want, "node_modules/dep/i.js") // reproducible: in no snapshot (DefaultKeepIgnored)
	wantStatus := git(t, wt, "status", "--porcelain")

	live, err := r.SnapshotCommit(ctx, wt, SnapshotOptions{})
	is.NoErr(err)
	ns, err := BackupNamespace("box1", RepoKey(r.Root))
	is.NoErr(err)
	git(t, r.Root, "update-ref", "refs/grove/tasks/t9", "HEAD") // t9's change: older than its snapshot
	write(t, filepath.Join(r.Root, "change.txt"), "a change\n")
	git(t, r.Root, "add", "change.txt")
	git(t, r.Root, "commit", "-q", "-m", "t8's change")
	change := git(t, r.Root, "rev-parse", "HEAD")
	git(t, r.Root, "update-ref", "refs/grove/tasks/t8", change) // t8: a change only
	plan, err := r.PlanBackup(ctx, remote, ns, map[string]string{"t9": live})
	is.NoErr(err)
	is.NoErr(r.PushBackup(ctx, plan))

	clone := filepath.Join(t.TempDir(), "clone")
	git(t, "", "clone", "-q", remote, clone)
	if _, err := run(ctx, clone, "checkout", "-q", "-b", "main", "origin/theirs"); err != nil {
		t.Fatal(err)
	}
	is.NoErr(os.RemoveAll(r.Root))
	is.NoErr(os.RemoveAll(wt))
	c, err := Open(ctx, clone)
	is.NoErr(err)
	refs, err := RemoteRefs(ctx, c.Root, remote, BackupRefsRoot)
	is.NoErr(err)
	entries := BackupEntries(refs, "t9")
	is.Equal(len(entries), 2) // its live snapshot and its change: the snapshot wins
	e, ref, err := c.FetchBackup(ctx, remote, "t9", entries)
	is.NoErr(err)
	is.Equal(e.Kind, BackupLive)
	is.Equal(e.SHA, live)
	e8, ref8, err := c.FetchBackup(ctx, remote, "t8", BackupEntries(refs, "t8"))
	is.NoErr(err)
	is.Equal(e8.Kind, BackupChange)
	is.Equal(git(t, c.Root, "rev-parse", ref8), change)
	is.Equal(len(BackupEntries(refs, "t")), 0) // whole ids only
	dst := filepath.Join(t.TempDir(), "restored")
	_, err = c.RestoreWith(ctx, ref, dst, "grove/t9/work")
	is.NoErr(err)
	is.Equal(treeFiles(t, dst), want)
	is.Equal(git(t, dst, "status", "--porcelain"), wantStatus)
	is.Equal(git(t, filepath.Join(dst, "vendor", "lib"), "log", "-1", "--format=%s"), "nested work")
	n, err := c.RestoreStashes(ctx, remote, ns, refs, "grove/t9/work", dst)
	is.NoErr(err)
	is.Equal(n, 1)
	is.Equal(git(t, dst, "stash", "list"), "stash@{0}: On grove/t9/work: wip")
	is.Equal(git(t, dst, "stash", "show", "-p", "--include-untracked", "stash@{0}")[0:4], "diff")
}
