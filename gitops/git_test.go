package gitops

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/matryer/is"
)

func TestGitError(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	_, err := run(ctxT(t), r.Root, "rev-parse", "--verify", "nope")
	var ge *GitError
	is.True(errors.As(err, &ge))
	is.Equal(ge.Args, []string{"rev-parse", "--verify", "nope"})
	is.Equal(ge.ExitCode, 128)
	is.Equal(ge.Stderr, "fatal: Needed a single revision\n")
	is.Equal(err.Error(), "git rev-parse --verify nope: fatal: Needed a single revision (exit 128)")

	// stdout and stderr stay apart.
	out, err := run(ctxT(t), r.Root, "show-ref", "--verify", "refs/heads/main", "refs/heads/nope")
	is.True(errors.As(err, &ge))
	head := git(t, r.Root, "rev-parse", "HEAD")
	is.Equal(string(out), head+" refs/heads/main\n")
	is.True(!strings.Contains(ge.Stderr, head))
	is.True(strings.Contains(ge.Stderr, "nope"))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = run(ctx, r.Root, "status")
	is.True(errors.Is(err, context.Canceled))
}

func TestTransient(t *testing.T) {
	is := is.New(t)
	g := func(stderr string) error { return &GitError{Args: []string{"x"}, ExitCode: 128, Stderr: stderr} }
	for _, s := range []string{
		"fatal: failed to read .git/worktrees/x/commondir: Success",
		"error: could not lock config file .git/config: File exists",
		"fatal: Unable to create '/r/.git/index.lock': File exists.",
		"fatal: cannot lock ref 'refs/heads/x': Unable to create '/r/.git/refs/heads/x.lock': File exists.",
	} {
		is.True(transient(g(s)))
	}
	for _, s := range []string{
		"fatal: update_ref failed for ref 'refs/heads/x': cannot lock ref 'refs/heads/x': is at 1 but expected 2",
		"fatal: update_ref failed for ref 'refs/heads/x': cannot lock ref 'refs/heads/x': reference already exists",
		"fatal: cannot lock ref 'refs/heads/x/y': 'refs/heads/x' exists; cannot create 'refs/heads/x/y'",
		"fatal: Needed a single revision",
		"",
	} {
		is.True(!transient(g(s)))
	}
	is.True(!transient(errors.New("could not lock"))) // only git's own stderr counts

	calls := 0
	err := retry(ctxT(t), func() error {
		calls++
		if calls < 3 {
			return g("fatal: Unable to create 'x.lock': File exists.")
		}
		return nil
	})
	is.NoErr(err)
	is.Equal(calls, 3)
	calls = 0
	err = retry(ctxT(t), func() error { calls++; return g("fatal: Unable to create 'x.lock': File exists.") })
	is.True(err != nil)
	is.Equal(calls, retryTries)
}
