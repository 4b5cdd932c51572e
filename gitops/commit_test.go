package gitops

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/grove-dev/grove"
	"github.com/matryer/is"
)

// hostileConfig points GIT_CONFIG_GLOBAL, for the rest of the test, at a
// configuration that breaks porcelain diff and commit.
func hostileConfig(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	hooks := filepath.Join(dir, "hooks")
	for _, h := range []string{"pre-commit", "commit-msg", "post-commit", "prepare-commit-msg"} {
		write(t, filepath.Join(hooks, h), "#!/bin/sh\necho hook ran >&2\nexit 1\n")
		if err := os.Chmod(filepath.Join(hooks, h), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "gitconfig")
	write(t, cfg, `[color]
	ui = always
	diff = always
[diff]
	noprefix = true
	external = false
	mnemonicPrefix = true
	renames = false
	relative = true
	algorithm = patience
	context = 0
[core]
	quotepath = true
	hooksPath = `+hooks+`
	pager = false
	abbrev = 7
[commit]
	gpgSign = true
	verbose = true
	cleanup = scissors
[status]
	showUntrackedFiles = no
[log]
	showSignature = true
[format]
	pretty = oneline
[diff "fake"]
	textconv = false
[gpg]
	program = false
`)
	t.Setenv("GIT_CONFIG_GLOBAL", cfg)
}

func TestCommitAllDiffDiffStat(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	lines := strings.Repeat("a line that stays the same\n", 20)
	write(t, filepath.Join(r.Root, "to rename.txt"), lines)
	write(t, filepath.Join(r.Root, "run.sh"), "#!/bin/sh\necho hi\n")
	write(t, filepath.Join(r.Root, ".gitattributes"), "*.txt diff=fake\n")
	git(t, r.Root, "add", "-A")
	git(t, r.Root, "commit", "-q", "-m", "more")
	base := git(t, r.Root, "rev-parse", "HEAD")
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/d", base))

	hostileConfig(t)

	write(t, filepath.Join(wt, "src", "a.txt"), "one\nTWO\nthree\n")                                  // edited
	is.NoErr(os.WriteFile(filepath.Join(wt, "img.bin"), []byte("\x00\x01\x02binary\xff\x00"), 0o644)) // binary added
	is.NoErr(os.Remove(filepath.Join(wt, "README")))                                                  // deleted
	is.NoErr(os.Rename(filepath.Join(wt, "to rename.txt"), filepath.Join(wt, "renamed.txt")))
	is.NoErr(os.Chmod(filepath.Join(wt, "run.sh"), 0o755))                     // chmod +x
	write(t, filepath.Join(wt, "dir with space", "ünï cødé.txt"), "unicode\n") // odd name

	head, err := r.CommitAll(ctx, wt, "task: the work\n\n# not a comment")
	is.NoErr(err)
	is.True(head != base)
	is.Equal(git(t, wt, "rev-parse", "HEAD"), head)
	is.Equal(git(t, wt, "status", "--porcelain", "-uall"), "") // everything committed
	is.Equal(git(t, wt, "rev-parse", "HEAD~1"), base)
	is.Equal(git(t, wt, "log", "-1", "--format=%B", "--no-show-signature"), "task: the work\n\n# not a comment")

	again, err := r.CommitAll(ctx, wt, "nothing")
	is.NoErr(err)
	is.Equal(again, head) // nothing to commit: HEAD unchanged

	patch, err := r.Diff(ctx, base, head)
	is.NoErr(err)
	is.True(!bytes.Contains(patch, []byte("\x1b["))) // no color
	is.True(bytes.Contains(patch, []byte("diff --git a/src/a.txt b/src/a.txt\n")))
	is.True(bytes.Contains(patch, []byte("rename from to rename.txt\n")))
	is.True(bytes.Contains(patch, []byte("GIT binary patch\n")))
	is.True(bytes.Contains(patch, []byte("old mode 100644\nnew mode 100755\n")))
	is.True(bytes.Contains(patch, []byte("-two\n+TWO\n")))

	// The patch recreates head from base, under the sane config.
	t.Setenv("GIT_CONFIG_GLOBAL", "/dev/null")
	check := filepath.Join(t.TempDir(), "check")
	is.NoErr(r.CreateWorktree(ctx, check, "grove/check", base))
	pf := filepath.Join(t.TempDir(), "p.diff")
	is.NoErr(os.WriteFile(pf, patch, 0o644))
	git(t, check, "apply", "--index", pf)
	is.Equal(treeFiles(t, check), treeFiles(t, wt))
	hostileConfig(t)

	stat, err := r.DiffStat(ctx, base, head)
	is.NoErr(err)
	slices.SortFunc(stat, func(a, b grove.FileChange) int { return strings.Compare(a.Path, b.Path) })
	is.Equal(stat, []grove.FileChange{
		{Status: "D", Path: "README", Added: 0, Deleted: 1},
		{Status: "A", Path: "dir with space/ünï cødé.txt", Added: 1},
		{Status: "A", Path: "img.bin", Added: -1, Deleted: -1},
		{Status: "R", Path: "renamed.txt", OldPath: "to rename.txt"},
		{Status: "M", Path: "run.sh"},
		{Status: "M", Path: "src/a.txt", Added: 1, Deleted: 1},
	})

	// Hostile revisions are refused, not read as options.
	_, err = r.Diff(ctx, "--output=/tmp/x", head)
	is.True(err != nil)
	_, err = r.DiffStat(ctx, base, "-p")
	is.True(err != nil)
}

func TestCommitAllKeepsAgentCommitsAndIdentity(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	base := git(t, r.Root, "rev-parse", "HEAD")
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/i", base))

	// The agent committed on its own, then left more work.
	write(t, filepath.Join(wt, "agent.txt"), "agent\n")
	git(t, wt, "add", "agent.txt")
	git(t, wt, "commit", "-q", "-m", "agent commit")
	agent := git(t, wt, "rev-parse", "HEAD")
	write(t, filepath.Join(wt, "left.txt"), "left\n")

	// No identity anywhere: grove's own.
	for _, k := range []string{"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"} {
		old := os.Getenv(k)
		os.Unsetenv(k)
		t.Cleanup(func() { os.Setenv(k, old) })
	}
	head, err := r.CommitAll(ctx, wt, "")
	is.NoErr(err)
	is.Equal(git(t, wt, "rev-parse", "HEAD~1"), agent)
	is.Equal(git(t, wt, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s"), "grove <grove@localhost>|grove <grove@localhost>|grove: work in progress")
	is.Equal(git(t, wt, "log", "-1", "--format=%s", agent), "agent commit")

	// The repository's identity when it has one.
	git(t, r.Root, "config", "user.name", "Repo Person")
	git(t, r.Root, "config", "user.email", "repo@example.com")
	write(t, filepath.Join(wt, "more.txt"), "more\n")
	head2, err := r.CommitAll(ctx, wt, "more")
	is.NoErr(err)
	is.True(head2 != head)
	is.Equal(git(t, wt, "log", "-1", "--format=%an <%ae>"), "Repo Person <repo@example.com>")
}

// CommitAll with nothing to commit leaves HEAD where it is (the commit it
// tries first fails, and is not an error); a merge the agent left
// half-done with nothing staged is not concluded by a commit; a commit
// that fails with changes staged is an error.
func TestCommitAllWithNothingToCommit(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r := newRepo(t)
	base := git(t, r.Root, "rev-parse", "HEAD")
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/n", base))

	head, err := r.CommitAll(ctx, wt, "nothing")
	is.NoErr(err)
	is.Equal(head, base)
	is.Equal(git(t, wt, "rev-parse", "HEAD"), base)

	// A merge stopped before its commit, whose result is HEAD's tree.
	git(t, r.Root, "branch", "side", base)
	side := filepath.Join(t.TempDir(), "side")
	git(t, r.Root, "worktree", "add", "-q", side, "side")
	write(t, filepath.Join(side, "side.txt"), "side\n")
	git(t, side, "add", "side.txt")
	git(t, side, "commit", "-q", "-m", "side")
	git(t, wt, "merge", "--no-commit", "-s", "ours", "side")
	gd, err := GitDirOf(wt)
	is.NoErr(err)
	is.True(exists(filepath.Join(gd, "MERGE_HEAD")))
	head, err = r.CommitAll(ctx, wt, "merge")
	is.NoErr(err)
	is.Equal(head, base)                             // not concluded
	is.True(exists(filepath.Join(gd, "MERGE_HEAD"))) // still in progress
	git(t, wt, "merge", "--abort")

	// Staged changes whose commit fails: its error, not "nothing to do".
	write(t, filepath.Join(wt, "new.txt"), "new\n")
	lock := filepath.Join(r.CommonDir, "refs", "heads", "grove", "n.lock")
	write(t, lock, "") // the branch's lock file: the commit cannot move it
	_, err = r.CommitAll(ctx, wt, "blocked")
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), "commit"))
	is.Equal(git(t, wt, "rev-parse", "HEAD"), base)
}
