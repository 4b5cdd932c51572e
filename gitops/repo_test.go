package gitops

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/grove-dev/grove"
	"github.com/matryer/is"
)

func TestOpenRefuses(t *testing.T) {
	ctx := ctxT(t)
	tmp := t.TempDir()
	plain := filepath.Join(tmp, "plain")
	write(t, filepath.Join(plain, "f"), "x")
	bare := filepath.Join(tmp, "bare.git")
	git(t, "", "init", "-q", "--bare", bare)
	empty := filepath.Join(tmp, "empty")
	git(t, "", "init", "-q", empty)

	for _, tc := range []struct {
		name, path, msg, hint string
	}{
		{"nonexistent", filepath.Join(tmp, "nope"), "no such directory: " + filepath.Join(tmp, "nope"), "check the path"},
		{"file", filepath.Join(plain, "f"), "not a directory: " + filepath.Join(plain, "f"), "directory"},
		{"non-git", plain, "not a git repository: " + plain, "run grove inside a git work tree, or pass --repo"},
		{"bare", bare, "bare repository: " + bare, "grove needs a work tree; clone it or add one with git worktree add"},
		{"empty", empty, "repository has no commits: " + empty, "make a first commit, then submit again"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			r, err := Open(ctx, tc.path)
			is.True(r == nil)
			var ue *grove.UserError
			is.True(errors.As(err, &ue))
			is.True(errors.Is(err, grove.ErrBadRequest))
			is.Equal(ue.Msg, tc.msg)
			is.True(!strings.Contains(ue.Msg, "\n"))
			is.True(strings.Contains(ue.Hint, tc.hint))
		})
	}
}

func TestOpenResolvesMainWorktree(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	is.Equal(r.CommonDir, filepath.Join(r.Root, ".git"))

	sub, err := Open(ctx, filepath.Join(r.Root, "src"))
	is.NoErr(err)
	is.Equal(*sub, *r)
	// OpenAtHead reads the main worktree's HEAD in the same call, as Head
	// does; detached too.
	_, head, err := OpenAtHead(ctx, filepath.Join(r.Root, "src"))
	is.NoErr(err)
	branch, commit, err := r.Head(ctx)
	is.NoErr(err)
	is.Equal(head, MainHead{Known: true, Branch: branch, Commit: commit})
	git(t, r.Root, "checkout", "-q", "--detach")
	_, head, err = OpenAtHead(ctx, r.Root)
	is.NoErr(err)
	is.Equal(head, MainHead{Known: true, Commit: commit})
	git(t, r.Root, "checkout", "-q", "main")

	linked := filepath.Join(t.TempDir(), "linked")
	git(t, r.Root, "worktree", "add", "-q", "-b", "other", linked)
	write(t, filepath.Join(linked, "deep", "x"), "x")
	for _, p := range []string{linked, filepath.Join(linked, "deep"), filepath.Join(linked, "src")} {
		got, head, err := OpenAtHead(ctx, p)
		is.NoErr(err)
		is.Equal(*got, *r)   // linked worktree resolves to the main one
		is.True(!head.Known) // its HEAD is not the main worktree's
	}

	// Separate git dir: main worktree found through worktree list.
	tmp := t.TempDir()
	wt, gd := filepath.Join(tmp, "wt"), filepath.Join(tmp, "store.git")
	git(t, "", "init", "-q", "-b", "main", "--separate-git-dir", gd, wt)
	write(t, filepath.Join(wt, "f"), "f")
	git(t, wt, "add", "f")
	git(t, wt, "commit", "-q", "-m", "f")
	sep, err := Open(ctx, wt)
	is.NoErr(err)
	is.Equal(sep.Root, wt)
	is.Equal(sep.CommonDir, gd)

	br, err := r.CurrentBranch(ctx)
	is.NoErr(err)
	is.Equal(br, "main")
	def, err := r.DefaultBranch(ctx)
	is.NoErr(err)
	is.Equal(def, "main")
}

func TestDefaultBranchDetached(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	git(t, r.Root, "checkout", "-q", "--detach")
	cur, err := r.CurrentBranch(ctx)
	is.NoErr(err)
	is.Equal(cur, "")
	def, err := r.DefaultBranch(ctx)
	is.NoErr(err)
	is.Equal(def, "main")

	git(t, r.Root, "update-ref", "refs/remotes/origin/trunk", "HEAD")
	git(t, r.Root, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/trunk")
	def, err = r.DefaultBranch(ctx)
	is.NoErr(err)
	is.Equal(def, "trunk")

	git(t, r.Root, "symbolic-ref", "-d", "refs/remotes/origin/HEAD")
	git(t, r.Root, "branch", "-q", "-m", "main", "feature")
	_, err = r.DefaultBranch(ctx)
	is.True(errors.Is(err, grove.ErrBadRequest))
}

func TestResolveCommit(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	head := git(t, r.Root, "rev-parse", "HEAD")
	git(t, r.Root, "tag", "-a", "-m", "v1", "v1")
	for _, rev := range []string{"HEAD", "main", head, head[:10], "v1", "refs/heads/main", "HEAD~0"} {
		got, err := r.ResolveCommit(ctx, rev)
		is.NoErr(err)
		is.Equal(got, head)
	}
	cwd := t.TempDir()
	for _, rev := range []string{"--upload-pack=x", "$(id)", ";id", "`id`", "-n", "--all", "--output=" + filepath.Join(cwd, "pwned"),
		"", "nope", "HEAD^{tree}", "main\nHEAD", "a\x00b", "HEAD:README", "@{-1}", "--end-of-options"} {
		got, err := r.ResolveCommit(ctx, rev)
		is.Equal(got, "")
		var ue *grove.UserError
		is.True(errors.As(err, &ue)) // hostile or unknown rev is a user error
		is.True(errors.Is(err, grove.ErrBadRequest))
		is.Equal(ue.Msg, "unknown base: "+rev)
		is.True(strings.HasPrefix(ue.Hint, "check the name with git rev-parse "))
		is.True(strings.HasSuffix(ue.Hint, ", or omit --base"))
	}
	_, err := os.Stat(filepath.Join(cwd, "pwned"))
	is.True(errors.Is(err, os.ErrNotExist))
}

func TestCheckBranchName(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	for _, ok := range []string{"main", "grove/task-1", "feature.x", "ü", "$(id)", ";id"} {
		is.NoErr(CheckBranchName(ctx, ok))
	}
	for _, bad := range []string{"", "-x", "--force", "a..b", "a b", "x.lock", "HEAD", "@{-1}", "a~1", "a:b", "/a", "a/", "a\nb", "@"} {
		err := CheckBranchName(ctx, bad)
		var ue *grove.UserError
		is.True(errors.As(err, &ue))
		is.True(errors.Is(err, grove.ErrBadRequest))
		is.True(strings.HasPrefix(ue.Msg, "invalid branch name: "))
	}
}

// plainBranchName skips git only for names git accepts unchanged: checked
// against git check-ref-format --branch itself on every name built from
// a small alphabet that includes each special case.
func TestPlainBranchNameAgreesWithGit(t *testing.T) {
	is := is.New(t)
	parts := []string{"", "a", "A9", "-x", "x-", "_", "HEAD", "x.lock", ".x", "a..b", "@", "x y", "ü", "grove", "t0123abcd", "work"}
	plain := 0
	for _, a := range parts {
		for _, b := range parts {
			for _, name := range []string{a, a + "/" + b, a + "//" + b, a + "/" + b + "/"} {
				if !plainBranchName(name) {
					continue
				}
				plain++
				out, err := exec.Command("git", "check-ref-format", "--branch", name).Output()
				is.NoErr(err)                                  // git accepts what the fast path accepts
				is.Equal(strings.TrimSpace(string(out)), name) // unchanged
			}
		}
	}
	is.True(plain > 50) // the fast path covers the common names
	is.True(plainBranchName("grove/t0123abcd/work"))
}

func TestRefs(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	head := git(t, r.Root, "rev-parse", "HEAD")

	ok, err := r.IsLocalBranch(ctx, "main")
	is.NoErr(err)
	is.True(ok)
	for _, name := range []string{"nope", "mai", "main^{tree}", "*", "ma[i]n"} {
		ok, err = r.IsLocalBranch(ctx, name)
		is.NoErr(err)
		is.True(!ok)
	}

	is.NoErr(r.SetRef(ctx, "refs/grove/tasks/t1", head))
	got, err := r.RefCommit(ctx, "refs/grove/tasks/t1")
	is.NoErr(err)
	is.Equal(got, head)
	got, err = r.RefCommit(ctx, "refs/grove/tasks") // a prefix is not the ref
	is.NoErr(err)
	is.Equal(got, "")

	write(t, filepath.Join(r.Root, "b"), "b")
	git(t, r.Root, "add", "b")
	git(t, r.Root, "commit", "-q", "-m", "b")
	next := git(t, r.Root, "rev-parse", "HEAD")
	is.NoErr(r.SetRef(ctx, "refs/grove/tasks/t1", next)) // no CAS
	got, _ = r.RefCommit(ctx, "refs/grove/tasks/t1")
	is.Equal(got, next)

	git(t, r.Root, "tag", "-a", "-m", "annotated", "v1", head)
	got, err = r.RefCommit(ctx, "refs/tags/v1") // peeled
	is.NoErr(err)
	is.Equal(got, head)

	is.True(r.SetRef(ctx, "HEAD", head) != nil)
	is.True(r.SetRef(ctx, "refs/x", "--help") != nil)
}

func TestLockSerialisesGoroutines(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	var inside, maxInside, total atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			for range 5 {
				unlock, err := r.Lock(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				n := inside.Add(1)
				if n > maxInside.Load() {
					maxInside.Store(n)
				}
				total.Add(1)
				inside.Add(-1)
				unlock()
				unlock() // twice is harmless
			}
		})
	}
	wg.Wait()
	is.Equal(maxInside.Load(), int32(1))
	is.Equal(total.Load(), int32(100))

	// Two descriptors of the lock file exclude each other within one
	// process: that is what makes the flock hold across processes too.
	f1, err := flockFile(ctx, filepath.Join(r.CommonDir, LockFile))
	is.NoErr(err)
	f2, err := os.OpenFile(filepath.Join(r.CommonDir, LockFile), os.O_RDWR, 0)
	is.NoErr(err)
	defer f2.Close()
	err = syscall.Flock(int(f2.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	is.True(errors.Is(err, syscall.EWOULDBLOCK))
	f1.Close()
	is.NoErr(syscall.Flock(int(f2.Fd()), syscall.LOCK_EX|syscall.LOCK_NB))
}

func TestLockAcrossProcesses(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	release := startLockHolder(t, r)

	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := r.Lock(short)
	is.True(errors.Is(err, context.DeadlineExceeded)) // held by the other process

	got := make(chan error, 1)
	go func() {
		unlock, err := r.Lock(ctxT(t))
		if err == nil {
			unlock()
		}
		got <- err
	}()
	release()
	is.NoErr(<-got) // acquired once the other process let go
}

func TestHead(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	sha := git(t, r.Root, "rev-parse", "HEAD")
	branch, commit, err := r.Head(ctx)
	is.NoErr(err)
	is.Equal(branch, "main")
	is.Equal(commit, sha)
	git(t, r.Root, "checkout", "-q", "--detach")
	branch, commit, err = r.Head(ctx)
	is.NoErr(err)
	is.Equal(branch, "")
	is.Equal(commit, sha)
	git(t, r.Root, "checkout", "-q", "--orphan", "unborn")
	_, _, err = r.Head(ctx)
	is.True(err != nil)
}
