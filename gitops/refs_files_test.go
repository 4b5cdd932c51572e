package gitops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// gitRefCommit is what RefCommit answered before refs_files.go: git's own
// reading of ref.
func gitRefCommit(t *testing.T, r *Repo, ref string) string {
	t.Helper()
	out := git(t, r.Root, "for-each-ref", "--format=%(refname) %(objectname)", "--", ref)
	for _, l := range strings.Split(out, "\n") {
		if name, oid, _ := strings.Cut(l, " "); name == ref {
			return oid // (a pattern also matches the refs below it)
		}
	}
	return ""
}

// TestFilesRefMatchesGit reads refs from the files in every state a ref
// can be in — loose, packed, packed and loose at different commits,
// deleted while packed, absent, shadowed by a directory — and compares
// each answer with git's.
func TestFilesRefMatchesGit(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	ctx := context.Background()
	first := git(t, r.Root, "rev-parse", "HEAD")
	write(t, filepath.Join(r.Root, "b.txt"), "b\n")
	git(t, r.Root, "add", "-A")
	git(t, r.Root, "commit", "-q", "-m", "second")
	second := git(t, r.Root, "rev-parse", "HEAD")

	check := func(what string, refs ...string) {
		t.Helper()
		for _, ref := range refs {
			want := gitRefCommit(t, r, ref)
			oid, known := filesRef(r.CommonDir, ref)
			if !known {
				t.Fatalf("%s: %s: the files could not answer", what, ref)
			}
			if oid != want {
				t.Fatalf("%s: %s: files say %q, git says %q", what, ref, oid, want)
			}
			got, err := r.RefCommit(ctx, ref)
			is.NoErr(err)
			is.Equal(got, want)
		}
	}
	refs := []string{"refs/heads/main", "refs/heads/loose", "refs/heads/packed", "refs/heads/both",
		"refs/heads/gone", "refs/heads/never", "refs/grove/tasks/t1", "refs/stash"}

	git(t, r.Root, "branch", "loose", first)
	git(t, r.Root, "branch", "packed", first)
	git(t, r.Root, "branch", "both", first)
	git(t, r.Root, "branch", "gone", first)
	git(t, r.Root, "update-ref", "refs/grove/tasks/t1", first)
	check("loose", refs...)

	git(t, r.Root, "pack-refs", "--all", "--prune")
	_, err := os.Stat(filepath.Join(r.CommonDir, "refs", "heads", "packed"))
	is.True(os.IsNotExist(err)) // really packed
	check("packed", refs...)

	git(t, r.Root, "branch", "-f", "both", second)  // loose now, stale in packed-refs
	git(t, r.Root, "branch", "-D", "gone")          // deleted from packed-refs
	git(t, r.Root, "branch", "-f", "loose", second) // loose again, over a packed one
	git(t, r.Root, "stash", "list")                 // (no stash yet)
	check("mixed", refs...)

	write(t, filepath.Join(r.Root, "README"), "edited\n")
	git(t, r.Root, "stash", "-q")
	git(t, r.Root, "branch", "dir/below", first) // refs/heads/dir is a directory now
	check("stash and directory", refs...)

	// What the files must not answer: git decides.
	git(t, r.Root, "symbolic-ref", "refs/heads/sym", "refs/heads/main")
	for _, ref := range []string{"refs/heads/sym", "refs/heads/dir", "refs/heads/dir/below/x", "refs/heads/../../config", "refs/heads/x.lock", "HEAD"} {
		if oid, known := filesRef(r.CommonDir, ref); known && oid != "" {
			t.Fatalf("%s: files answered %q", ref, oid)
		}
		got, err := r.RefCommit(ctx, ref)
		is.NoErr(err)
		is.Equal(got, gitRefCommit(t, r, ref)) // RefCommit falls back to git
	}
	// A reftable repository is never read from files.
	is.NoErr(os.Mkdir(filepath.Join(r.CommonDir, "reftable"), 0o755))
	_, known := filesRef(r.CommonDir, "refs/heads/main")
	is.True(!known)
}

// TestWorktreeFilesMatchGit compares what the gate reads from a linked
// worktree's files (its git dir, HEAD, branch, refs/worktree/*) with what
// git says, on a branch, detached, and with per-worktree refs.
func TestWorktreeFilesMatchGit(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	ctx := context.Background()
	wt := filepath.Join(t.TempDir(), "wt")
	git(t, r.Root, "worktree", "add", "-q", "-b", "feature", wt)

	viaGit := func() wtInfo {
		t.Helper()
		out := git(t, wt, "rev-parse", "--path-format=absolute", "--git-dir", "HEAD", "--symbolic-full-name", "HEAD")
		l := strings.Split(out, "\n")
		return wtInfo{gitDir: l[0], head: l[1], branch: strings.TrimPrefix(l[2], "refs/heads/")}
	}
	refsViaGit := func() []string {
		out := git(t, wt, "for-each-ref", "--format=%(refname)", "refs/worktree/")
		if out == "" {
			return nil
		}
		return strings.Split(out, "\n")
	}
	compare := func(what string) {
		t.Helper()
		info, known := r.worktreeInfoFiles(wt)
		if !known {
			t.Fatalf("%s: the files could not answer", what)
		}
		want := viaGit()
		if want.branch == "HEAD" {
			want.branch = ""
		}
		if !samePath(info.gitDir, want.gitDir) || info.head != want.head || info.branch != want.branch {
			t.Fatalf("%s: files say %+v, git says %+v", what, info, want)
		}
		moved, err := r.movedHead(ctx, wt, info.gitDir)
		is.NoErr(err)
		is.Equal(moved[1], want.head)
		refs, known := worktreeRefFiles(r.CommonDir, info.gitDir)
		is.True(known)
		slices.Sort(refs)
		is.Equal(refs, refsViaGit())
	}
	compare("on a branch")
	git(t, wt, "update-ref", "refs/worktree/keep", "HEAD")
	git(t, wt, "update-ref", "refs/worktree/deep/er", "HEAD")
	compare("with worktree refs")
	git(t, wt, "checkout", "-q", "--detach")
	compare("detached")
	git(t, r.Root, "pack-refs", "--all")
	git(t, wt, "checkout", "-q", "feature")
	compare("branch packed")

	// Configuration that could move the worktree's top: git answers.
	git(t, r.Root, "config", "core.worktree", r.Root)
	_, known := r.worktreeInfoFiles(wt)
	is.True(!known)
	git(t, r.Root, "config", "--unset", "core.worktree")
	write(t, filepath.Join(r.CommonDir, "worktrees", "wt", "config.worktree"), "")
	_, known = r.worktreeInfoFiles(wt)
	is.True(!known)
}

// TestHiddenEntriesMatchLsFiles reads the assume-unchanged and
// skip-worktree bits from index files of versions 2, 3 and 4 (names that
// share long prefixes, so version 4's compression is exercised) and
// compares them with `git ls-files -v`; a split index and a sparse index
// are left to git.
func TestHiddenEntriesMatchLsFiles(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	for i := range 60 {
		write(t, filepath.Join(r.Root, "deep", "common", "prefix", fmt.Sprintf("file-%02d-%s.txt", i, strings.Repeat("x", i))), "x\n")
	}
	write(t, filepath.Join(r.Root, "long", strings.Repeat("n", 200)), "long\n")
	git(t, r.Root, "add", "-A")
	git(t, r.Root, "commit", "-q", "-m", "files")
	index := filepath.Join(r.CommonDir, "index") // the main worktree's

	viaGit := func() []string {
		var want []string
		for _, e := range strings.Split(git(t, r.Root, "ls-files", "-v", "-z"), "\x00") {
			if len(e) < 3 {
				continue
			}
			switch tag := e[0]; {
			case tag >= 'a' && tag <= 'z':
				want = append(want, "A "+e[2:])
			case tag == 'S':
				want = append(want, "S "+e[2:])
			}
		}
		return want
	}
	viaFiles := func(what string) []string {
		t.Helper()
		hidden, known := readHiddenEntries(index, 20)
		if !known {
			t.Fatalf("%s: the index file could not be read", what)
		}
		var got []string
		for _, h := range hidden {
			if h.assumeValid {
				got = append(got, "A "+h.name)
			} else if h.skipWorktree {
				got = append(got, "S "+h.name)
			}
		}
		return got
	}
	for _, v := range []string{"2", "3", "4"} {
		git(t, r.Root, "update-index", "--index-version", v)
		is.Equal(viaFiles("v"+v+" clean"), viaGit())
		is.Equal(len(viaGit()), 0)
		git(t, r.Root, "update-index", "--assume-unchanged", "deep/common/prefix/file-07-xxxxxxx.txt", "README")
		git(t, r.Root, "update-index", "--skip-worktree", "deep/common/prefix/file-42-"+strings.Repeat("x", 42)+".txt",
			"long/"+strings.Repeat("n", 200))
		got := viaFiles("v" + v + " hidden")
		is.Equal(got, viaGit())
		is.Equal(len(got), 4)
		git(t, r.Root, "update-index", "--no-assume-unchanged", "deep/common/prefix/file-07-xxxxxxx.txt", "README")
		git(t, r.Root, "update-index", "--no-skip-worktree", "deep/common/prefix/file-42-"+strings.Repeat("x", 42)+".txt",
			"long/"+strings.Repeat("n", 200))
	}

	// Not answered from the file: a truncated index, a split index, a
	// sparse index.
	b, err := os.ReadFile(index)
	is.NoErr(err)
	is.NoErr(os.WriteFile(index+".cut", b[:len(b)/2], 0o644))
	_, known := readHiddenEntries(index+".cut", 20)
	is.True(!known)
	git(t, r.Root, "update-index", "--split-index")
	_, known = readHiddenEntries(index, 20)
	is.True(!known)
	git(t, r.Root, "update-index", "--no-split-index")
	_, known = readHiddenEntries(index, 20)
	is.True(known)
	git(t, r.Root, "sparse-checkout", "set", "--cone", "--sparse-index", "src")
	_, known = readHiddenEntries(index, 20)
	is.True(!known)
}

// TestWorktreesFilesMatchGit compares the worktree list read from the
// files with `git worktree list --porcelain` in the states the gate and
// the retire path meet: on a branch, detached, locked, its directory
// gone (prunable), its admin dir without a gitdir file, the branch packed.
func TestWorktreesFilesMatchGit(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	ctx := context.Background()
	base := t.TempDir()
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		git(t, r.Root, "worktree", "add", "-q", "-b", "wt-"+name, filepath.Join(base, name))
	}
	compare := func(what string) {
		t.Helper()
		files, known := r.worktreesFiles()
		if !known {
			t.Fatalf("%s: the files could not answer", what)
		}
		viaGit, err := r.worktreesGit(ctx)
		is.NoErr(err)
		if fmt.Sprint(files) != fmt.Sprint(viaGit) {
			t.Fatalf("%s:\nfiles %+v\ngit   %+v", what, files, viaGit)
		}
	}
	compare("fresh")
	git(t, filepath.Join(base, "b"), "checkout", "-q", "--detach")
	git(t, r.Root, "worktree", "lock", "--reason", "busy", filepath.Join(base, "c"))
	is.NoErr(os.RemoveAll(filepath.Join(base, "d")))
	is.NoErr(os.Remove(filepath.Join(r.CommonDir, "worktrees", "e", "gitdir")))
	compare("detached, locked, gone, no gitdir file")
	is.NoErr(os.RemoveAll(filepath.Join(base, "c")))
	compare("locked and gone")
	git(t, r.Root, "pack-refs", "--all")
	compare("packed")
	git(t, r.Root, "checkout", "-q", "--detach")
	compare("main detached")
}

// TestIdentityCacheFollowsConfig checks that the cached identity answer
// changes as soon as the configuration does, and that configuration with
// includes is never cached.
func TestIdentityCacheFollowsConfig(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	ctx := context.Background()
	fallback := []string{"-c", "user.name=" + fallbackName, "-c", "user.email=" + fallbackEmail}
	for range 2 { // the second answer comes from the cache
		id, err := identityArgs(ctx, r.Root)
		is.NoErr(err)
		is.Equal(id, fallback)
	}
	git(t, r.Root, "config", "user.name", "Someone")
	id, err := identityArgs(ctx, r.Root)
	is.NoErr(err)
	is.Equal(id, fallback[2:])
	git(t, r.Root, "config", "user.email", "someone@example.com")
	id, err = identityArgs(ctx, r.Root)
	is.NoErr(err)
	is.Equal(len(id), 0)
	git(t, r.Root, "config", "--unset", "user.name")
	id, err = identityArgs(ctx, r.Root)
	is.NoErr(err)
	is.Equal(id, fallback[:2])

	// Worktrees of one repository share the answer (the key is what the
	// files say, not where they are).
	wt1, wt2 := filepath.Join(t.TempDir(), "w1"), filepath.Join(t.TempDir(), "w2")
	git(t, r.Root, "worktree", "add", "-q", "-b", "w1", wt1)
	git(t, r.Root, "worktree", "add", "-q", "-b", "w2", wt2)
	k1, ok1 := configDigest(wt1)
	k2, ok2 := configDigest(wt2)
	is.True(ok1 && ok2)
	is.Equal(k1, k2)

	write(t, filepath.Join(r.Root, "..", "extra.cfg"), "[user]\n\tname = Included\n")
	git(t, r.Root, "config", "include.path", filepath.Join(r.Root, "..", "extra.cfg"))
	_, cacheable := configDigest(r.Root)
	is.True(!cacheable)
	id, err = identityArgs(ctx, r.Root)
	is.NoErr(err)
	is.Equal(len(id), 0) // name from the include, email from the file
}

// TestLooseObjectTypeMatchesGit reads the type of loose objects of each
// kind from their headers and compares it with `git cat-file -t`; a
// packed object is left to git, and ResolveCommit gives the same answers
// either way.
func TestLooseObjectTypeMatchesGit(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	ctx := context.Background()
	git(t, r.Root, "tag", "-a", "-m", "annotated", "v1")
	oids := map[string]string{
		"commit": git(t, r.Root, "rev-parse", "HEAD"),
		"tree":   git(t, r.Root, "rev-parse", "HEAD^{tree}"),
		"blob":   git(t, r.Root, "rev-parse", "HEAD:README"),
		"tag":    git(t, r.Root, "rev-parse", "v1"),
	}
	for kind, oid := range oids {
		typ, known := looseObjectType(r.CommonDir, oid)
		is.True(known)
		is.Equal(typ, kind)
		is.Equal(typ, git(t, r.Root, "cat-file", "-t", oid))
	}
	got, err := r.ResolveCommit(ctx, oids["commit"])
	is.NoErr(err)
	is.Equal(got, oids["commit"])
	got, err = r.ResolveCommit(ctx, oids["tag"]) // a tag peels to its commit, via git
	is.NoErr(err)
	is.Equal(got, oids["commit"])
	_, err = r.ResolveCommit(ctx, oids["tree"])
	is.True(err != nil) // unknown base

	git(t, r.Root, "gc", "-q", "--prune=now")
	_, known := looseObjectType(r.CommonDir, oids["commit"])
	is.True(!known) // packed now: git answers
	got, err = r.ResolveCommit(ctx, oids["commit"])
	is.NoErr(err)
	is.Equal(got, oids["commit"])
	_, known = looseObjectType(r.CommonDir, "../../../../etc/passwd")
	is.True(!known)
}

// TestHeadReflogFileMatchesGit reads a worktree's HEAD reflog from its
// file and compares it with `git reflog show`, and checks heldAtOnce
// against git's reachability: held commits and their parents are held at
// once; a commit made on a detached HEAD and left is not (git decides,
// and the gate reports it).
func TestHeadReflogFileMatchesGit(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	ctx := context.Background()
	wt := filepath.Join(t.TempDir(), "wt")
	git(t, r.Root, "worktree", "add", "-q", "-b", "feature", wt)
	base := git(t, wt, "rev-parse", "HEAD")
	write(t, filepath.Join(wt, "f.txt"), "one\n")
	git(t, wt, "add", "-A")
	git(t, wt, "commit", "-q", "-m", "one")
	c1 := git(t, wt, "rev-parse", "HEAD")
	gd, err := GitDirOf(wt)
	is.NoErr(err)

	viaGit := func() []string {
		var shas []string
		for _, l := range strings.Split(git(t, wt, "reflog", "show", "--format=%H", "HEAD", "--"), "\n") {
			if l != "" && !slices.Contains(shas, l) {
				shas = append(shas, l)
			}
		}
		return shas
	}
	shas, ok := headReflogFile(gd)
	is.True(ok)
	is.Equal(shas, viaGit())
	is.Equal(shas, []string{c1, base})
	is.True(r.heldAtOnce(shas, []string{c1}))                   // c1 itself, base its parent
	is.True(r.heldAtOnce(shas, []string{"refs/heads/feature"})) // read from the ref file
	is.True(!r.heldAtOnce(shas, []string{base}))                // c1 is not below base

	// A commit on a detached HEAD, then back to the branch.
	git(t, wt, "checkout", "-q", "--detach")
	write(t, filepath.Join(wt, "g.txt"), "two\n")
	git(t, wt, "add", "-A")
	git(t, wt, "commit", "-q", "-m", "two")
	git(t, wt, "checkout", "-q", "feature")
	shas, ok = headReflogFile(gd)
	is.True(ok)
	is.Equal(shas, viaGit())
	is.True(!r.heldAtOnce(shas, []string{c1}))
	rep := r.AtRisk(ctx, wt, GateOptions{Branch: "feature", AppliedRefs: []string{c1}})
	is.True(rep.Has(RiskReflog)) // git's answer: the detached commit is only in the reflog
	n, err := r.unheld(ctx, c1, "refs/heads/feature", nil, []string{c1})
	is.NoErr(err)
	is.Equal(n, 0)
}

// TestOpenFromFilesMatchesGit opens repositories from their files and
// compares the result with what git says; what the files must not answer
// (a subdirectory, a detached HEAD, core.bare, core.worktree, a linked
// worktree) is left to git.
func TestOpenFromFilesMatchesGit(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	ctx := context.Background()
	got, head, ok := openFromFiles(r.Root)
	is.True(ok)
	is.Equal(got.Root, r.Root)
	is.Equal(got.CommonDir, r.CommonDir)
	is.Equal(head, MainHead{Known: true, Branch: "main", Commit: git(t, r.Root, "rev-parse", "HEAD")})
	is.Equal(git(t, r.Root, "rev-parse", "--path-format=absolute", "--git-common-dir"), got.CommonDir)

	git(t, r.Root, "pack-refs", "--all")
	_, head, ok = openFromFiles(r.Root)
	is.True(ok)
	is.Equal(head.Commit, git(t, r.Root, "rev-parse", "HEAD"))

	_, _, ok = openFromFiles(filepath.Join(r.Root, "src")) // a subdirectory
	is.True(!ok)
	wt := filepath.Join(t.TempDir(), "wt")
	git(t, r.Root, "worktree", "add", "-q", "-b", "other", wt)
	_, _, ok = openFromFiles(wt) // a linked worktree
	is.True(!ok)
	opened, _, err := OpenAtHead(ctx, wt)
	is.NoErr(err)
	is.Equal(opened.Root, r.Root)

	git(t, r.Root, "checkout", "-q", "--detach")
	_, _, ok = openFromFiles(r.Root)
	is.True(!ok)
	git(t, r.Root, "checkout", "-q", "main")
	for _, kv := range [][2]string{{"core.bare", "yes"}, {"core.worktree", wt}} {
		git(t, r.Root, "config", kv[0], kv[1])
		_, _, ok = openFromFiles(r.Root)
		if ok {
			t.Fatalf("%s=%s: answered from the files", kv[0], kv[1])
		}
		git(t, r.Root, "config", "--unset", kv[0])
	}
	_, _, ok = openFromFiles(r.Root)
	is.True(ok)
}

// TestSoleMergeBaseMatchesGit compares the loose-object answer to "is
// base the one merge base of ours and theirs" with `git merge-base --all`
// on the histories apply meets: a task on base while the target moved on
// (yes), a target that merged the task's commit (no: the task's commit is
// the merge base), a task not started from base (no), and the same
// history packed (git answers).
func TestSoleMergeBaseMatchesGit(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	commit := func(branch, file string) string {
		git(t, r.Root, "checkout", "-q", branch)
		write(t, filepath.Join(r.Root, file), file+"\n")
		git(t, r.Root, "add", "-A")
		git(t, r.Root, "commit", "-q", "-m", file)
		return git(t, r.Root, "rev-parse", "HEAD")
	}
	gitSays := func(base, ours, theirs string) bool {
		out, err := run(context.Background(), r.Root, "merge-base", "--all", ours, theirs)
		if err != nil && exitCode(err) != 1 {
			t.Fatal(err)
		}
		mb := lines(out)
		return len(mb) == 1 && mb[0] == base
	}
	base := git(t, r.Root, "rev-parse", "HEAD")
	git(t, r.Root, "branch", "task")
	git(t, r.Root, "branch", "early", base+"~0")
	theirs := commit("task", "task.txt")
	commit("main", "m1.txt")
	ours := commit("main", "m2.txt")
	is.True(r.soleMergeBase(base, ours, theirs)) // the fast path answers
	is.True(gitSays(base, ours, theirs))

	git(t, r.Root, "checkout", "-q", "main")
	git(t, r.Root, "merge", "-q", "--no-edit", "task")
	merged := git(t, r.Root, "rev-parse", "HEAD")
	is.True(!r.soleMergeBase(base, merged, theirs))
	is.True(!gitSays(base, merged, theirs))

	other := commit("early", "early.txt") // a sibling of the task's commit
	is.Equal(r.soleMergeBase(theirs, ours, other), gitSays(theirs, ours, other))
	is.True(!r.soleMergeBase(theirs, ours, other))

	git(t, r.Root, "gc", "-q", "--prune=now")
	is.True(!r.soleMergeBase(base, ours, theirs)) // packed: git decides
	is.True(gitSays(base, ours, theirs))
}

// TestLooseTreesAndSettingsMatchGit reads commits' trees and .grove.toml
// from loose objects and compares them with git's reading; a symbolic
// link, a packed object and a replaced commit are left to git.
func TestLooseTreesAndSettingsMatchGit(t *testing.T) {
	is := is.New(t)
	r := newRepo(t)
	ctx := context.Background()
	without := git(t, r.Root, "rev-parse", "HEAD")
	write(t, filepath.Join(r.Root, ".grove.toml"), "setup_timeout = \"3m\"\n")
	write(t, filepath.Join(r.Root, ".grove.tomlx"), "not it\n") // a name that sorts beside it
	git(t, r.Root, "add", "-A")
	git(t, r.Root, "commit", "-q", "-m", "settings")
	with := git(t, r.Root, "rev-parse", "HEAD")

	trees, ok := looseCommitTrees(r.CommonDir, without, with)
	is.True(ok)
	is.Equal(trees, []string{git(t, r.Root, "rev-parse", without+"^{tree}"), git(t, r.Root, "rev-parse", with+"^{tree}")})
	_, ok = looseCommitTrees(r.CommonDir, trees[0]) // a tree is not a commit
	is.True(!ok)
	_, ok = looseCommitTrees(r.CommonDir, "HEAD") // not a full id
	is.True(!ok)

	_, absent, known := r.looseSettingsFile(without)
	is.True(known && absent)
	b, absent, known := r.looseSettingsFile(with)
	is.True(known && !absent)
	is.Equal(string(b), git(t, r.Root, "cat-file", "blob", with+":.grove.toml")+"\n")
	s, err := r.ReadSettings(ctx, with)
	is.NoErr(err)
	is.Equal(s.Sources["setup_timeout"], ".grove.toml at "+with[:12])

	// A symbolic link named .grove.toml: git reads it (as its target's name).
	is.NoErr(os.Remove(filepath.Join(r.Root, ".grove.toml")))
	is.NoErr(os.Symlink("elsewhere", filepath.Join(r.Root, ".grove.toml")))
	git(t, r.Root, "add", "-A")
	git(t, r.Root, "commit", "-q", "-m", "link")
	link := git(t, r.Root, "rev-parse", "HEAD")
	_, _, known = r.looseSettingsFile(link)
	is.True(!known)

	// A replaced commit reads as its replacement: git's to say.
	git(t, r.Root, "replace", without, with)
	_, ok = looseCommitTrees(r.CommonDir, without)
	is.True(!ok)
	_, _, known = r.looseSettingsFile(with)
	is.True(!known)
	git(t, r.Root, "replace", "-d", without)

	// Packed: git answers.
	git(t, r.Root, "gc", "-q", "--prune=now")
	_, ok = looseCommitTrees(r.CommonDir, with)
	is.True(!ok)
	_, _, known = r.looseSettingsFile(with)
	is.True(!known)
	s, err = r.ReadSettings(ctx, with)
	is.NoErr(err)
	is.Equal(s.Sources["setup_timeout"], ".grove.toml at "+with[:12])
}
