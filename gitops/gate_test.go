package gitops

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// commitsOf lists every commit id reachable in the repository at dir from
// any ref, any worktree's HEAD, and any reflog (with withReflogs): what
// "existed before" a removal.
func commitsOf(t *testing.T, dir string, withReflogs bool) []string {
	t.Helper()
	args := []string{"rev-list", "--all"}
	if withReflogs {
		args = append(args, "--reflog")
	}
	out := git(t, dir, args...)
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// assertReachable fails unless every commit of before is still reachable
// from some ref of the repository at dir (`git rev-list --all`, no
// reflogs) and its object exists (`git cat-file -e`).
func assertReachable(t *testing.T, dir string, before []string) {
	t.Helper()
	after := commitsOf(t, dir, false)
	for _, c := range before {
		if !slices.Contains(after, c) {
			t.Fatalf("commit %s is no longer reachable from any ref of %s", c, dir)
		}
		git(t, dir, "cat-file", "-e", c+"^{commit}")
	}
}

// fileTree reads every entry under dir (skipping dir/.git only: nested
// .git directories are compared too) as path -> type, executable bit and
// content (a symlink's target, a directory's "dir"): diff -r with modes as
// git records them. Files under a nested .git/objects are compared by
// content, not permission (git writes them read-only; a restore writes
// them 0644, which git does not mind).
func fileTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == ".git" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			m[rel] = "link:" + target
			return err
		case info.IsDir():
			m[rel] = "dir"
		default:
			b, err := os.ReadFile(p)
			m[rel] = fmt.Sprintf("x=%v:%s", info.Mode().Perm()&0o100 != 0, b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sameTree fails naming the first difference between the trees at a and b.
func sameTree(t *testing.T, a, b string) {
	t.Helper()
	ta, tb := fileTree(t, a), fileTree(t, b)
	for p, v := range ta {
		if w, ok := tb[p]; !ok {
			t.Fatalf("%s: in %s, missing from %s", p, a, b)
		} else if v != w {
			t.Fatalf("%s differs: %q in %s, %q in %s", p, v, a, w, b)
		}
	}
	for p := range tb {
		if _, ok := ta[p]; !ok {
			t.Fatalf("%s: in %s, not in %s", p, b, a)
		}
	}
}

func porcelain(t *testing.T, dir string) string {
	t.Helper()
	return git(t, dir, "status", "--porcelain=v1", "-uall")
}

// commitIn makes a commit in the repository at dir.
func commitIn(t *testing.T, dir, file, content string) {
	t.Helper()
	write(t, filepath.Join(dir, file), content)
	git(t, dir, "add", "-A")
	git(t, dir, "commit", "-q", "-m", "commit "+file)
}

// nestedRepo makes a repository at dir with one commit.
func nestedRepo(t *testing.T, dir string) {
	t.Helper()
	git(t, "", "init", "-q", "-b", "main", dir)
	commitIn(t, dir, "lib.txt", "nested work\n")
}

// forceAndRestore runs the forced path: gate (must not be safe), snapshot,
// removal, restore elsewhere; then asserts the restored worktree equals a
// copy taken before (file by file, nested .git included), with the same
// git status, and that every commit that existed before is reachable.
// dropped are worktree-relative paths a snapshot leaves out (reproducible
// ignored files). nested are worktree-relative nested repositories whose
// `git log --all`, `git status` and `git stash list` must come back equal.
// It returns the restored path.
func forceAndRestore(t *testing.T, r *Repo, wt, branch string, dropped []string, nested ...string) string {
	t.Helper()
	is := is.New(t)
	ctx := ctxT(t)
	copyDir := filepath.Join(t.TempDir(), "copy")
	is.NoErr(copyTree(wt, copyDir))
	for _, d := range dropped {
		is.NoErr(os.RemoveAll(filepath.Join(copyDir, d)))
	}
	status := porcelain(t, wt)
	before := commitsOf(t, wt, true)
	logs := map[string]string{}
	for _, n := range nested {
		logs[n] = git(t, filepath.Join(wt, n), "log", "--all", "--format=%H %s")
		logs[n+" status"] = porcelain(t, filepath.Join(wt, n))
		logs[n+" stash"] = git(t, filepath.Join(wt, n), "stash", "list")
	}
	ref := SnapshotsPrefix + "t"
	_, err := r.Snapshot(ctx, wt, ref, false)
	is.NoErr(err)
	is.NoErr(r.RemoveWorktree(ctx, wt, branch))
	_, err = os.Stat(wt)
	is.True(errors.Is(err, os.ErrNotExist))
	assertReachable(t, r.Root, before)

	back := filepath.Join(t.TempDir(), "back")
	is.NoErr(r.Restore(ctx, ref, back, branch))
	sameTree(t, copyDir, back)
	for _, n := range nested {
		is.Equal(git(t, filepath.Join(back, n), "log", "--all", "--format=%H %s"), logs[n])
		is.Equal(porcelain(t, filepath.Join(back, n)), logs[n+" status"])
		is.Equal(git(t, filepath.Join(back, n), "stash", "list"), logs[n+" stash"])
	}
	is.Equal(porcelain(t, back), status)
	return back
}

func TestGateNestedRepo(t *testing.T) {
	for _, tc := range []struct {
		name   string
		nested string // worktree-relative
		setup  func(t *testing.T, r *Repo, wt, dir string)
		risks  []string
		drop   []string // reproducible, left out of the snapshot
	}{
		{name: "untracked", nested: "nested", risks: []string{RiskUntracked, RiskNested},
			setup: func(t *testing.T, r *Repo, wt, dir string) { nestedRepo(t, dir) }},
		{name: "in ignored vendor", nested: "vendor/lib", risks: []string{RiskIgnored, RiskNested},
			setup: func(t *testing.T, r *Repo, wt, dir string) {
				nestedRepo(t, dir)
				commitIn(t, dir, "unpushed.txt", "unpushed\n")
			}},
		{name: "in reproducible node_modules", nested: "node_modules/dep", risks: []string{RiskNested}, drop: []string{"node_modules/other"},
			setup: func(t *testing.T, r *Repo, wt, dir string) {
				write(t, filepath.Join(wt, "node_modules", "other", "i.js"), "reproducible\n")
				nestedRepo(t, dir)
			}},
		{name: "deep in an untracked dir", nested: "tools/a/b/repo", risks: []string{RiskUntracked, RiskNested},
			setup: func(t *testing.T, r *Repo, wt, dir string) {
				write(t, filepath.Join(wt, "tools", "notes.txt"), "n\n")
				nestedRepo(t, dir)
				nestedRepo(t, filepath.Join(dir, "inner")) // a repository in the repository
				write(t, filepath.Join(dir, "inner", "dirty.txt"), "uncommitted\n")
			}},
		{name: "only a stash", nested: "vendor/stashed", risks: []string{RiskIgnored, RiskNested},
			setup: func(t *testing.T, r *Repo, wt, dir string) {
				nestedRepo(t, dir)
				write(t, filepath.Join(dir, "lib.txt"), "stashed change\n")
				git(t, dir, "stash", "-q")
			}},
		{name: "only an index change", nested: "node_modules/idx", risks: []string{RiskNested},
			setup: func(t *testing.T, r *Repo, wt, dir string) {
				git(t, "", "init", "-q", "-b", "main", dir)
				write(t, filepath.Join(dir, "staged.txt"), "staged only\n")
				git(t, dir, "add", "staged.txt")
				if err := os.Remove(filepath.Join(dir, "staged.txt")); err != nil {
					t.Fatal(err)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			ctx := ctxT(t)
			r, wt := gateSetup(t)
			git(t, r.Root, "config", "core.excludesFile", filepath.Join(r.Root, "excludes"))
			write(t, filepath.Join(r.Root, "excludes"), "vendor/\n")
			tc.setup(t, r, wt, filepath.Join(wt, filepath.FromSlash(tc.nested)))

			rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g", AppliedRefs: []string{"main"}})
			is.Equal(reasons(rep), tc.risks)
			is.True(strings.Contains(detail(rep, RiskNested), tc.nested))
			forceAndRestore(t, r, wt, "grove/g", tc.drop, tc.nested)
		})
	}
}

// A nested repository that holds nothing (a bare `git init`) is not work.
func TestGateNestedEmptyRepo(t *testing.T) {
	is := is.New(t)
	r, wt := gateSetup(t)
	git(t, "", "init", "-q", filepath.Join(wt, "node_modules", "empty"))
	rep := r.AtRisk(ctxT(t), wt, GateOptions{})
	is.True(rep.Safe)
}

// A retirement whose gate ran before a nested repository appeared keeps
// the worktree.
func TestGateNestedRecheck(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g", AppliedRefs: []string{"main"}})
	is.True(rep.Safe)
	nestedRepo(t, filepath.Join(wt, "node_modules", "late"))
	err := r.RetireWorktree(ctx, wt, "grove/g", filepath.Join(t.TempDir(), "trash"), rep)
	is.True(errors.Is(err, grove.ErrAtRisk))
	is.True(strings.Contains(err.Error(), RiskNested))
	git(t, filepath.Join(wt, "node_modules", "late"), "log", "-1")
}

// A commit made on a detached HEAD, then left for the task branch, is held
// only by the worktree's HEAD reflog.
func TestGateReflogOnlyCommit(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	opt := GateOptions{Branch: "grove/g", AppliedRefs: []string{"main"}}
	git(t, wt, "checkout", "-q", "--detach")
	commitIn(t, wt, "lost.txt", "only the reflog\n")
	commitIn(t, wt, "lost2.txt", "only the reflog too\n")
	lost := git(t, wt, "rev-parse", "HEAD")
	git(t, wt, "checkout", "-q", "grove/g")

	rep := r.AtRisk(ctx, wt, opt)
	is.Equal(reasons(rep), []string{RiskReflog})
	is.Equal(detail(rep, RiskReflog), "2 commit(s) only the HEAD reflog holds, newest "+shortSHA(lost))
	// Held elsewhere: safe.
	git(t, r.Root, "branch", "keep", lost)
	is.True(r.AtRisk(ctx, wt, opt).Safe)
	git(t, r.Root, "branch", "-D", "keep")

	back := forceAndRestore(t, r, wt, "grove/g", nil)
	git(t, back, "cat-file", "-e", lost)
	is.True(strings.Contains(git(t, r.Root, "rev-list", SnapshotsPrefix+"t"), lost))
}

// Ignored files outside the short reproducible list (tmp/, *.log, vendor/,
// build/) are at risk and in a forced snapshot; reproducible ones are not;
// a snapshot over its size limit refuses, naming the size and the option
// that drops ignored files, and DropIgnored takes it without them.
func TestGateIgnoredFiles(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	write(t, filepath.Join(r.Root, "excludes"), "tmp/\n*.log\nvendor/\nbuild/\ntarget/\n__pycache__/\n")
	git(t, r.Root, "config", "core.excludesFile", filepath.Join(r.Root, "excludes"))
	for _, p := range []string{"tmp/notes.txt", "run.log", "vendor/patched.go", "build/handmade.cfg"} {
		write(t, filepath.Join(wt, p), "user work "+p+"\n")
	}
	for _, p := range []string{"target/debug/app", "node_modules/x/i.js", "__pycache__/m.pyc"} {
		write(t, filepath.Join(wt, p), "reproducible\n")
	}
	rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g", AppliedRefs: []string{"main"}})
	is.Equal(reasons(rep), []string{RiskIgnored})
	is.Equal(detail(rep, RiskIgnored), "build/, run.log, tmp/, vendor/")
	// Configurable per repository.
	is.True(r.AtRisk(ctx, wt, GateOptions{KeepIgnored: []string{"tmp", "*.log", "vendor", "build", "target", "node_modules", "__pycache__"}}).Safe)

	// Over the limit: refused, nothing recorded.
	_, err := r.SnapshotWith(ctx, wt, SnapshotsPrefix+"big", SnapshotOptions{MaxBytes: 10})
	is.True(errors.Is(err, grove.ErrAtRisk))
	is.True(strings.Contains(err.Error(), "not taken: its ignored files and nested repositories hold 99 B, over the 10 B limit")) // the four files at risk
	is.True(strings.Contains(grove.HintOf(err), "DropIgnored"))
	c, _ := r.RefCommit(ctx, SnapshotsPrefix+"big")
	is.Equal(c, "")
	// Dropping ignored files explicitly.
	snap, err := r.SnapshotWith(ctx, wt, SnapshotsPrefix+"big", SnapshotOptions{MaxBytes: 10, DropIgnored: true})
	is.NoErr(err)
	is.Equal(git(t, r.Root, "ls-tree", "-r", "--name-only", snap+":worktree"), ".gitignore\nREADME\nsrc/a.txt")

	forceAndRestore(t, r, wt, "grove/g", []string{"target", "node_modules", "__pycache__"})
}

// conflictSetup commits "ours" on grove/g in wt and "theirs" on a branch
// that is deleted again once the operation started (finish), so only the
// operation's state holds the incoming commit, which it returns.
func conflictSetup(t *testing.T, wt string) (theirs string) {
	t.Helper()
	write(t, filepath.Join(wt, "README"), "ours\n")
	git(t, wt, "commit", "-q", "-am", "ours")
	git(t, wt, "checkout", "-q", "-b", "tmp", "HEAD~1")
	write(t, filepath.Join(wt, "README"), "theirs\n")
	git(t, wt, "commit", "-q", "-am", "theirs")
	write(t, filepath.Join(wt, "src", "a.txt"), "theirs too\n")
	git(t, wt, "commit", "-q", "-am", "theirs 2")
	theirs = git(t, wt, "rev-parse", "HEAD")
	git(t, wt, "checkout", "-q", "grove/g")
	return theirs
}

func TestGateOperationState(t *testing.T) {
	for _, tc := range []struct {
		name     string
		start    func(t *testing.T, wt, theirs string) // leaves the operation in progress
		op       string                                // the gate's name for it
		finish   []string                              // after resolving README
		detached bool
	}{
		{name: "merge", op: "merge", finish: []string{"merge", "--continue"},
			start: func(t *testing.T, wt, theirs string) { gitFails(t, wt, "merge", theirs) }},
		{name: "cherry-pick", op: "cherry-pick", finish: []string{"cherry-pick", "--continue"},
			start: func(t *testing.T, wt, theirs string) { gitFails(t, wt, "cherry-pick", theirs+"~1", theirs) }},
		{name: "revert", op: "revert", finish: []string{"revert", "--continue"},
			start: func(t *testing.T, wt, theirs string) {
				write(t, filepath.Join(wt, "README"), "ours again\n")
				git(t, wt, "commit", "-q", "-am", "ours again")
				gitFails(t, wt, "revert", "--no-edit", "HEAD~1")
			}},
		{name: "rebase", op: "rebase", finish: []string{"rebase", "--continue"}, detached: true,
			start: func(t *testing.T, wt, theirs string) { gitFails(t, wt, "rebase", "--merge", theirs) }},
		{name: "rebase apply", op: "rebase", finish: []string{"rebase", "--continue"}, detached: true,
			start: func(t *testing.T, wt, theirs string) { gitFails(t, wt, "rebase", "--apply", theirs) }},
		{name: "bisect", op: "bisect", detached: true,
			start: func(t *testing.T, wt, theirs string) {
				git(t, wt, "bisect", "start", theirs, "main")
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			ctx := ctxT(t)
			r, wt := gateSetup(t)
			theirs := conflictSetup(t, wt)
			tc.start(t, wt, theirs)
			git(t, wt, "branch", "-D", "tmp") // only the operation holds theirs now
			git(t, r.Root, "worktree", "lock", "--reason", "agent at work", wt)
			longStatus := git(t, wt, "status")
			kept := []string{theirs, git(t, wt, "rev-parse", "HEAD")}

			rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g", AppliedRefs: []string{"main"}})
			is.True(rep.Has(RiskOperation))
			is.True(strings.Contains(detail(rep, RiskOperation), tc.op))
			is.Equal(detail(rep, RiskLocked), "agent at work")

			back := forceAndRestore(t, r, wt, "grove/g", nil)
			for _, c := range kept {
				git(t, r.Root, "cat-file", "-e", c)
			}
			is.Equal(git(t, back, "status"), strings.ReplaceAll(longStatus, wt, back))
			is.True(strings.Contains(git(t, r.Root, "worktree", "list", "--porcelain"), "locked agent at work"))
			if tc.detached {
				is.Equal(git(t, back, "rev-parse", "--abbrev-ref", "HEAD"), "HEAD")
			}
			if tc.finish == nil {
				git(t, back, "bisect", "reset")
				is.Equal(git(t, back, "symbolic-ref", "HEAD"), "refs/heads/grove/g")
				return
			}
			write(t, filepath.Join(back, "README"), "resolved\n")
			git(t, back, "add", "README")
			if tc.name == "rebase apply" {
				write(t, filepath.Join(back, "src", "a.txt"), "resolved\n") // no three-way here
				git(t, back, "add", "-A")
			}
			git(t, back, append([]string{"-c", "core.editor=true"}, tc.finish...)...)
			is.Equal(git(t, back, "symbolic-ref", "HEAD"), "refs/heads/grove/g")
			is.Equal(git(t, back, "status", "--porcelain"), "")
			if tc.name == "merge" {
				is.Equal(git(t, back, "rev-parse", "HEAD^2"), theirs)
			}
		})
	}
}

// gitFails runs git in dir and fails the test if it succeeds (a conflict
// is expected).
func gitFails(t *testing.T, dir string, args ...string) {
	t.Helper()
	if _, err := run(ctxT(t), dir, args...); err == nil {
		t.Fatalf("git %v succeeded; a conflict was expected", args)
	}
}

// A worktree whose directory is gone: the gate sees what git's admin dir
// still holds, and a snapshot records it (HEAD, detached and reflog
// commits, the index, as files too).
func TestGateMissingWorktree(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	git(t, wt, "checkout", "-q", "--detach")
	commitIn(t, wt, "detached.txt", "detached work\n")
	head := git(t, wt, "rev-parse", "HEAD")
	git(t, wt, "checkout", "-q", "HEAD~1")
	commitIn(t, wt, "detached2.txt", "more detached work\n")
	head2 := git(t, wt, "rev-parse", "HEAD")
	write(t, filepath.Join(wt, "staged.txt"), "staged\n")
	git(t, wt, "add", "staged.txt")
	git(t, wt, "update-ref", "refs/worktree/mark", head)
	cached := git(t, wt, "diff", "--cached")
	before := commitsOf(t, wt, true)
	is.True(slices.Contains(before, head))
	copyDir := filepath.Join(t.TempDir(), "copy")
	is.NoErr(copyTree(wt, copyDir))

	// Moved by hand: found, and repair is what it takes.
	moved := filepath.Join(filepath.Dir(wt), "moved")
	is.NoErr(os.Rename(wt, moved))
	opt := GateOptions{Branch: "grove/g", AppliedRefs: []string{"main"}}
	rep := r.AtRisk(ctx, wt, opt)
	is.True(rep.Has(RiskMoved))
	is.True(strings.Contains(detail(rep, RiskMoved), "git worktree repair "+moved))
	_, err := r.Snapshot(ctx, wt, SnapshotsPrefix+"m", false)
	is.True(errors.Is(err, grove.ErrAtRisk))
	is.True(strings.Contains(grove.HintOf(err), "git worktree repair "+moved))

	// Gone for good.
	is.NoErr(os.RemoveAll(moved))
	rep = r.AtRisk(ctx, wt, opt)
	is.Equal(reasons(rep), []string{RiskMissing, RiskStaged, RiskDetached, RiskReflog, RiskWorktreeRefs})
	_, err = r.Snapshot(ctx, wt, SnapshotsPrefix+"m", false)
	is.NoErr(err)
	is.NoErr(r.RemoveWorktree(ctx, wt, "grove/g"))
	assertReachable(t, r.Root, before)

	back := filepath.Join(t.TempDir(), "back")
	notes, err := r.RestoreWith(ctx, SnapshotsPrefix+"m", back, "grove/g")
	is.NoErr(err)
	is.True(strings.Contains(strings.Join(notes, "\n"), "HEAD was detached at "+shortSHA(head2)))
	is.Equal(git(t, back, "rev-parse", "HEAD"), head2)
	is.Equal(git(t, back, "diff", "--cached"), cached)
	is.Equal(git(t, back, "rev-parse", "refs/worktree/mark"), head)
	is.Equal(porcelain(t, back), "A  staged.txt")
	sameTree(t, copyDir, back) // the files were those of the index
}

// A writer that left the worktree but holds a file open in it is seen by
// the gate (its descriptor), and so is a program mapped from it.
func TestGateProcessOpenFile(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	// (cd /; exec 3>>$WT/README; wait for stdin to close; echo x >&3)
	cmd := exec.Command("sh", "-c", `exec 3>>"$1"; read _; echo x >&3`, "sh", filepath.Join(wt, "README"))
	cmd.Dir = "/"
	stdin, err := cmd.StdinPipe()
	is.NoErr(err)
	is.NoErr(cmd.Start())
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	// Wait (with a deadline) until the shell has opened the file.
	deadline := time.Now().Add(30 * time.Second)
	for {
		rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g", AppliedRefs: []string{"main"}})
		if rep.Has(RiskProcess) {
			is.Equal(detail(rep, RiskProcess), "pids "+strconv.Itoa(cmd.Process.Pid))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writer was never seen: %v", rep.Risks)
		}
		runtime.Gosched()
	}
	// The write lands in the worktree, which is still there.
	stdin.Close()
	is.NoErr(cmd.Wait())
	is.Equal(read(t, filepath.Join(wt, "README")), "hello\nx\n")
}

// An agent commits inside a submodule and records it in the
// superproject: the commit lives only in the worktree's module store.
// The gate says so; KeepSubmoduleCommits (apply's first step) brings it
// into the main repository's store, after which the change applies and
// `git submodule update` works in the main checkout once the worktree is
// gone.
func TestGateSubmoduleCommits(t *testing.T) {
	for _, mainHasModule := range []bool{true, false} {
		t.Run(fmt.Sprintf("main store exists=%v", mainHasModule), func(t *testing.T) {
			is := is.New(t)
			ctx := ctxT(t)
			lib := filepath.Join(t.TempDir(), "lib")
			nestedRepo(t, lib)
			r := newRepo(t)
			wt := filepath.Join(t.TempDir(), "wt")
			if mainHasModule {
				git(t, r.Root, "-c", "protocol.file.allow=always", "submodule", "add", "-q", lib, "lib")
				git(t, r.Root, "commit", "-q", "-m", "sub")
				is.NoErr(r.CreateWorktree(ctx, wt, "grove/s", "main"))
				git(t, wt, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init")
			} else {
				// The agent adds the submodule itself.
				is.NoErr(r.CreateWorktree(ctx, wt, "grove/s", "main"))
				git(t, wt, "-c", "protocol.file.allow=always", "submodule", "add", "-q", lib, "lib")
				git(t, wt, "commit", "-q", "-m", "sub")
			}
			commitIn(t, filepath.Join(wt, "lib"), "agent.txt", "agent's submodule work\n")
			local := git(t, filepath.Join(wt, "lib"), "rev-parse", "HEAD")
			git(t, wt, "commit", "-q", "-am", "bump lib")
			opt := GateOptions{Branch: "grove/s", AppliedRefs: []string{"main"}}
			rep := r.AtRisk(ctx, wt, opt)
			is.True(rep.Has(RiskSubCommits))
			is.True(!rep.Has(RiskSubmodule)) // committed: git status is clean

			is.NoErr(r.KeepSubmoduleCommits(ctx, wt))
			is.True(!r.AtRisk(ctx, wt, opt).Has(RiskSubCommits))
			is.NoErr(r.KeepSubmoduleCommits(ctx, wt)) // idempotent

			base := git(t, r.Root, "rev-parse", "main")
			_, err := r.Apply(ctx, "main", base, git(t, wt, "rev-parse", "HEAD"), "applied")
			is.NoErr(err)
			opt.AppliedRefs = append(opt.AppliedRefs, git(t, wt, "rev-parse", "HEAD"))
			rep = r.AtRisk(ctx, wt, opt)
			is.True(rep.Safe) // nothing left that only the worktree holds
			// Retire re-checks it in the trash, where the submodule's
			// relative .git file no longer resolves: found by its store.
			entry, err := r.Retire(ctx, wt, "grove/s", filepath.Join(t.TempDir(), "trash"), rep, RetireOptions{})
			is.NoErr(err)
			is.True(entry.Dir != "")
			_, err = os.Stat(wt)
			is.True(errors.Is(err, os.ErrNotExist))

			git(t, r.Root, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init")
			is.Equal(git(t, filepath.Join(r.Root, "lib"), "rev-parse", "HEAD"), local)
			is.Equal(read(t, filepath.Join(r.Root, "lib", "agent.txt")), "agent's submodule work\n")
		})
	}
}
