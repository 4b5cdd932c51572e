package gitops

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grove-dev/grove"
	"github.com/matryer/is"
)

// task makes a worktree on a new branch at base, lets change edit it, and
// commits the result; it returns the worktree and its head.
func task(t *testing.T, r *Repo, name, base string, change func(wt string)) (string, string) {
	t.Helper()
	ctx := ctxT(t)
	wt := filepath.Join(t.TempDir(), name)
	if err := r.CreateWorktree(ctx, wt, "grove/"+name, base); err != nil {
		t.Fatal(err)
	}
	change(wt)
	head, err := r.CommitAll(ctx, wt, name)
	if err != nil {
		t.Fatal(err)
	}
	return wt, head
}

// checkoutState captures what a person sees in a checkout: refs, HEAD,
// status, staged and unstaged diffs, and the files.
type checkoutState struct {
	refs, head, status, cached, unstaged string
	files                                map[string]string
}

func stateOf(t *testing.T, dir string) checkoutState {
	return checkoutState{
		refs:     git(t, dir, "for-each-ref"),
		head:     git(t, dir, "rev-parse", "HEAD"),
		status:   git(t, dir, "status", "--porcelain", "-uall"),
		cached:   git(t, dir, "diff", "--cached"),
		unstaged: git(t, dir, "diff"),
		files:    treeFiles(t, dir),
	}
}

func TestApplyClean(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	base := git(t, r.Root, "rev-parse", "HEAD")
	wt, head := task(t, r, "clean", base, func(wt string) {
		write(t, filepath.Join(wt, "src", "a.txt"), "one\n2\nthree\n")
		write(t, filepath.Join(wt, "new", "file.txt"), "new\n")
		if err := os.WriteFile(filepath.Join(wt, "bin"), []byte("\x00\xffbin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(wt, "README")); err != nil {
			t.Fatal(err)
		}
	})

	res, err := r.Apply(ctx, "main", base, head, "apply clean")
	is.NoErr(err)
	is.Equal(len(res.Conflicts), 0)
	is.True(res.Commit != "" && res.Commit != head)
	is.Equal(git(t, r.Root, "rev-parse", "main"), res.Commit)
	is.Equal(git(t, r.Root, "rev-list", "--count", base+"..main"), "1") // one commit
	is.Equal(git(t, r.Root, "rev-parse", "main~1"), base)
	is.Equal(git(t, r.Root, "log", "-1", "--format=%s", "main"), "apply clean")
	is.Equal(treeFiles(t, r.Root), treeFiles(t, wt))               // byte for byte, modes too
	is.Equal(git(t, r.Root, "status", "--porcelain", "-uall"), "") // index consistent
	is.Equal(git(t, r.Root, "rev-parse", "main^{tree}"), git(t, r.Root, "rev-parse", head+"^{tree}"))

	// No changes: the tip, no new commit.
	res, err = r.Apply(ctx, "main", head, head, "nothing")
	is.NoErr(err)
	is.Equal(res.Commit, git(t, r.Root, "rev-parse", "main"))
	is.Equal(git(t, r.Root, "rev-list", "--count", base+"..main"), "1")

	// Unknown target.
	_, err = r.Apply(ctx, "nope", base, head, "x")
	is.True(errors.Is(err, grove.ErrNotFound))
	// An unresolvable base or head is named (the one-process lookup falls
	// back to one lookup each), and nothing moves.
	tip := git(t, r.Root, "rev-parse", "main")
	_, err = r.Apply(ctx, "main", "0000000000000000000000000000000000000001", head, "x")
	is.True(err != nil && strings.Contains(err.Error(), "resolve base 0000000000000000000000000000000000000001"))
	_, err = r.Apply(ctx, "main", base, "no-such-rev", "x")
	is.True(err != nil && strings.Contains(err.Error(), "resolve head no-such-rev"))
	is.Equal(git(t, r.Root, "rev-parse", "main"), tip)
}

func TestApplyMergesWithMovedTarget(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	base := git(t, r.Root, "rev-parse", "HEAD")
	_, head := task(t, r, "moved", base, func(wt string) {
		write(t, filepath.Join(wt, "src", "a.txt"), "one\ntwo\nthree\nfour\n")
	})
	write(t, filepath.Join(r.Root, "README"), "hello again\n")
	git(t, r.Root, "commit", "-q", "-am", "user work")
	tip := git(t, r.Root, "rev-parse", "HEAD")

	res, err := r.Apply(ctx, "main", base, head, "moved")
	is.NoErr(err)
	is.Equal(git(t, r.Root, "rev-parse", "main~1"), tip)
	is.Equal(read(t, filepath.Join(r.Root, "README")), "hello again\n")
	is.Equal(read(t, filepath.Join(r.Root, "src", "a.txt")), "one\ntwo\nthree\nfour\n")
	is.Equal(git(t, r.Root, "status", "--porcelain", "-uall"), "")
	is.Equal(res.Commit, git(t, r.Root, "rev-parse", "HEAD"))
}

func TestApplyConflict(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	base := git(t, r.Root, "rev-parse", "HEAD")
	wt, head := task(t, r, "conflict", base, func(wt string) {
		write(t, filepath.Join(wt, "src", "a.txt"), "one\ntask\nthree\n")
		write(t, filepath.Join(wt, "README"), "task readme\n")
		write(t, filepath.Join(wt, "fine.txt"), "fine\n")
	})
	write(t, filepath.Join(r.Root, "src", "a.txt"), "one\nuser\nthree\n")
	write(t, filepath.Join(r.Root, "README"), "user readme\n")
	git(t, r.Root, "commit", "-q", "-am", "user")
	write(t, filepath.Join(r.Root, "dirty"), "untracked\n")
	before := stateOf(t, r.Root)
	wtBefore := stateOf(t, wt)

	res, err := r.Apply(ctx, "main", base, head, "conflict")
	is.NoErr(err) // a conflict is a result, not an error
	is.Equal(res.Commit, "")
	is.Equal(res.Conflicts, []string{"README", "src/a.txt"})
	is.Equal(stateOf(t, r.Root), before) // main and its ref untouched
	is.Equal(stateOf(t, wt), wtBefore)   // the worktree too
}

// A file of the main checkout that was only touched (same content, new
// times: its index stat data is stale) does not stop the apply: the
// refused first read-tree is tried again after a refresh.
func TestApplyOverTouchedFile(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	base := git(t, r.Root, "rev-parse", "HEAD")
	_, head := task(t, r, "touch", base, func(wt string) {
		write(t, filepath.Join(wt, "src", "a.txt"), "one\n2\nthree\n")
	})
	later := time.Now().Add(time.Hour)
	is.NoErr(os.Chtimes(filepath.Join(r.Root, "src", "a.txt"), later, later))
	_, err := run(ctx, r.Root, "read-tree", "-m", "-u", "--end-of-options", base, head)
	is.True(err != nil) // without a refresh git refuses: the case is real
	res, err := r.Apply(ctx, "main", base, head, "apply over a touched file")
	is.NoErr(err)
	is.Equal(git(t, r.Root, "rev-parse", "main"), res.Commit)
	is.Equal(read(t, filepath.Join(r.Root, "src", "a.txt")), "one\n2\nthree\n")
	is.Equal(git(t, r.Root, "status", "--porcelain", "-uall"), "")
}

func TestApplyKeepsUnrelatedDirtyFiles(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	base := git(t, r.Root, "rev-parse", "HEAD")
	write(t, filepath.Join(r.Root, "other.txt"), "other\n")
	git(t, r.Root, "add", "other.txt")
	git(t, r.Root, "commit", "-q", "-m", "other")
	tip := git(t, r.Root, "rev-parse", "HEAD")
	_, head := task(t, r, "unrelated", base, func(wt string) {
		write(t, filepath.Join(wt, "src", "a.txt"), "one\ntwo\nthree\ntask\n")
		write(t, filepath.Join(wt, "added.txt"), "added\n")
	})
	// Unrelated local work in main: unstaged, staged, untracked.
	write(t, filepath.Join(r.Root, "README"), "local edit\n")
	write(t, filepath.Join(r.Root, "other.txt"), "staged edit\n")
	git(t, r.Root, "add", "other.txt")
	write(t, filepath.Join(r.Root, "scratch.txt"), "untracked\n")

	res, err := r.Apply(ctx, "main", base, head, "unrelated")
	is.NoErr(err)
	is.Equal(git(t, r.Root, "rev-parse", "HEAD~1"), tip)
	is.Equal(res.Commit, git(t, r.Root, "rev-parse", "HEAD"))
	is.Equal(read(t, filepath.Join(r.Root, "README")), "local edit\n")
	is.Equal(read(t, filepath.Join(r.Root, "other.txt")), "staged edit\n")
	is.Equal(read(t, filepath.Join(r.Root, "scratch.txt")), "untracked\n")
	is.Equal(read(t, filepath.Join(r.Root, "src", "a.txt")), "one\ntwo\nthree\ntask\n")
	is.Equal(git(t, r.Root, "status", "--porcelain", "-uall"), " M README\nM  other.txt\n?? scratch.txt")
}

func TestApplyRefusesOverlappingLocalChanges(t *testing.T) {
	ctx := ctxT(t)
	r := newRepo(t)
	base := git(t, r.Root, "rev-parse", "HEAD")
	_, head := task(t, r, "overlap", base, func(wt string) {
		write(t, filepath.Join(wt, "src", "a.txt"), "one\ntwo\nthree\ntask\n")
		write(t, filepath.Join(wt, "added.txt"), "added\n")
	})
	for _, tc := range []struct {
		name, file string
		setup      func()
	}{
		{"dirty", "src/a.txt", func() { write(t, filepath.Join(r.Root, "src", "a.txt"), "mine\n") }},
		{"staged", "src/a.txt", func() {
			write(t, filepath.Join(r.Root, "src", "a.txt"), "mine\n")
			git(t, r.Root, "add", "src/a.txt")
			write(t, filepath.Join(r.Root, "src", "a.txt"), "one\ntwo\nthree\n")
		}},
		{"untracked", "added.txt", func() { write(t, filepath.Join(r.Root, "added.txt"), "mine\n") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			git(t, r.Root, "reset", "-q", "--hard")
			git(t, r.Root, "clean", "-qfd")
			tc.setup()
			before := stateOf(t, r.Root)
			_, err := r.Apply(ctx, "main", base, head, "overlap")
			var ue *grove.UserError
			is.True(errors.As(err, &ue))
			is.True(errors.Is(err, grove.ErrConflict))
			is.Equal(ue.Msg, "main checkout has local changes to "+tc.file)
			is.Equal(ue.Hint, "commit or stash them, then grove apply again")
			is.Equal(stateOf(t, r.Root), before) // nothing changed
		})
	}
}

func TestApplyTargetNotCheckedOut(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	base := git(t, r.Root, "rev-parse", "HEAD")
	git(t, r.Root, "branch", "release")
	wt, head := task(t, r, "release", base, func(wt string) {
		write(t, filepath.Join(wt, "src", "a.txt"), "release\n")
	})
	write(t, filepath.Join(r.Root, "src", "a.txt"), "dirty in main\n")
	before := stateOf(t, r.Root)

	res, err := r.Apply(ctx, "release", base, head, "to release")
	is.NoErr(err)
	is.Equal(git(t, r.Root, "rev-parse", "release"), res.Commit)
	is.Equal(git(t, r.Root, "rev-parse", "release^{tree}"), git(t, wt, "rev-parse", "HEAD^{tree}"))
	after := stateOf(t, r.Root)
	after.refs = before.refs
	is.Equal(after, before) // main checkout untouched
}

// A session applies, the user edits what was applied, and the session's
// next task (based on its own last head) lands only its own change.
func TestApplySessionRebase(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	base := git(t, r.Root, "rev-parse", "HEAD")
	wt, head1 := task(t, r, "session", base, func(wt string) {
		write(t, filepath.Join(wt, "src", "a.txt"), "one\nsession\nthree\n")
	})
	_, err := r.Apply(ctx, "main", base, head1, "first")
	is.NoErr(err)
	write(t, filepath.Join(r.Root, "src", "a.txt"), "one\nuser fixed it\nthree\n")
	git(t, r.Root, "commit", "-q", "-am", "user fix")

	write(t, filepath.Join(wt, "second.txt"), "second\n")
	head2, err := r.CommitAll(ctx, wt, "second")
	is.NoErr(err)
	res, err := r.Apply(ctx, "main", head1, head2, "second")
	is.NoErr(err)
	is.Equal(len(res.Conflicts), 0)
	is.Equal(read(t, filepath.Join(r.Root, "src", "a.txt")), "one\nuser fixed it\nthree\n")
	is.Equal(read(t, filepath.Join(r.Root, "second.txt")), "second\n")
	is.Equal(git(t, r.Root, "status", "--porcelain", "-uall"), "")
}
