package gitops

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// gitState reads what a rename can change in r's git dir: every ref,
// reflog, HEAD, packed-refs and the config, with the time of each reflog
// entry blanked (the two sides run a moment apart), plus the directories
// under refs/ and logs/ (git prunes the ones a deleted ref leaves empty).
func gitState(t *testing.T, r *Repo) map[string]string {
	t.Helper()
	stamp := regexp.MustCompile(`> [0-9]+ ([+-][0-9]{4})\t`)
	if os.Getenv("GIT_COMMITTER_DATE") != "" {
		stamp = regexp.MustCompile(`^\b$`) // fixed: compared as they are
	}
	m := map[string]string{}
	err := filepath.WalkDir(r.CommonDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(r.CommonDir, p)
		rel = filepath.ToSlash(rel)
		top, _, _ := strings.Cut(rel, "/")
		switch {
		case rel == ".":
			return nil
		case top == "objects" || top == "hooks" || top == "info":
			return filepath.SkipDir
		case d.IsDir():
			m[rel] = "dir"
			return nil
		}
		base := filepath.Base(rel)
		if base == "index" || base == "grove.lock" || base == "gitdir" || base == "COMMIT_EDITMSG" || base == "description" {
			return nil
		}
		b, err := os.ReadFile(p)
		m[rel] = stamp.ReplaceAllString(string(b), "> TIME $1\t")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func diffStates(git, files map[string]string) string {
	var out []string
	for k, v := range git {
		if w, ok := files[k]; !ok {
			out = append(out, fmt.Sprintf("only after git: %s = %q", k, v))
		} else if w != v {
			out = append(out, fmt.Sprintf("%s: git %q, files %q", k, v, w))
		}
	}
	for k, v := range files {
		if _, ok := git[k]; !ok {
			out = append(out, fmt.Sprintf("only after files: %s = %q", k, v))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// TestRenameBranchFilesMatchesGit renames a branch in two repositories
// built alike, with `git branch -m` (run from the main worktree, as
// RenameBranch runs it) in one and renameBranchFiles in the other, and
// compares every ref, reflog, HEAD and the config: where the files path
// takes the rename, the result is git's byte for byte (bar reflog
// times); where it must not (packed, configured, hooked, taken, the main
// worktree's branch), it writes nothing and git does it.
func TestRenameBranchFilesMatchesGit(t *testing.T) {
	const from, to = "grove/pool/abc", "grove/t1/work"
	wt := func(r *Repo, branch string) {
		git(t, r.Root, "worktree", "add", "-q", "-b", branch, filepath.Join(filepath.Dir(r.Root), "wt-"+filepath.Base(branch)), "HEAD")
	}
	cases := []struct {
		name    string
		from    string
		setup   func(r *Repo)
		handled bool
	}{
		{"pool entry beside another", from, func(r *Repo) { wt(r, from); wt(r, "grove/pool/zzz") }, true},
		{"last in its directory", from, func(r *Repo) { wt(r, from) }, true},
		{"not checked out", "feature", func(r *Repo) { git(t, r.Root, "branch", "feature") }, true},
		{"checked out twice over", from, func(r *Repo) {
			wt(r, from)
			git(t, r.Root, "worktree", "add", "-q", "-f", filepath.Join(filepath.Dir(r.Root), "wt-again"), from)
		}, true},
		{"a cut-short rename", from, func(r *Repo) {
			wt(r, from)
			// What a run that stopped after writing the new ref leaves.
			oid := git(t, r.Root, "rev-parse", "refs/heads/"+from)
			oldLog, newLog := refPath(filepath.Join(r.CommonDir, "logs"), "refs/heads/"+from), refPath(filepath.Join(r.CommonDir, "logs"), "refs/heads/"+to)
			if err := os.MkdirAll(filepath.Dir(newLog), 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(oldLog, newLog); err != nil {
				t.Fatal(err)
			}
			const ident = "Test Committer <committer@example.com>"
			if err := appendFile(newLog, fmt.Appendf(nil, "%s %s %s 1 +0000\tBranch: renamed refs/heads/%s to refs/heads/%s\n", oid, oid, ident, from, to)); err != nil {
				t.Fatal(err)
			}
			write(t, refPath(r.CommonDir, "refs/heads/"+to), oid+"\n")
		}, true},
		{"main worktree's branch", "main", func(r *Repo) {}, false},
		{"packed", from, func(r *Repo) { wt(r, from); git(t, r.Root, "pack-refs", "--all") }, false},
		{"configured", from, func(r *Repo) { wt(r, from); git(t, r.Root, "config", "branch."+from+".description", "x") }, false},
		{"hooked", from, func(r *Repo) {
			wt(r, from)
			write(t, filepath.Join(r.CommonDir, "hooks", "reference-transaction"), "#!/bin/sh\nexit 0\n")
			if err := os.Chmod(filepath.Join(r.CommonDir, "hooks", "reference-transaction"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, true}, // grove's git runs no hooks either
		{"shared", from, func(r *Repo) { wt(r, from); git(t, r.Root, "config", "core.sharedRepository", "group") }, false},
		{"taken at another commit", from, func(r *Repo) {
			wt(r, from)
			write(t, filepath.Join(r.Root, "n.txt"), "n\n")
			git(t, r.Root, "add", "-A")
			git(t, r.Root, "commit", "-q", "-m", "n")
			git(t, r.Root, "branch", to)
		}, false},
		{"taken at the same commit", from, func(r *Repo) { wt(r, from); git(t, r.Root, "branch", to) }, false},
		{"a packed ref below the new name", from, func(r *Repo) {
			wt(r, from)
			oid := git(t, r.Root, "rev-parse", "HEAD")
			write(t, filepath.Join(r.CommonDir, "packed-refs"), "# pack-refs with: peeled fully-peeled sorted \n"+oid+" refs/heads/"+to+"/x\n")
		}, false},
	}
	for _, c := range cases {
		for _, date := range []string{"", "2024-03-04T05:06:07+0200"} {
			name := c.name
			if date != "" && c.name == "a cut-short rename" {
				continue // its first half's entry is this test's own
			}
			if date != "" {
				name += " at a fixed date"
			}
			t.Run(name, func(t *testing.T) {
				t.Setenv("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z") // the same commits on both sides
				withGit, withFiles := newRepo(t), newRepo(t)
				c.setup(withGit)
				c.setup(withFiles)
				if c.name == "a cut-short rename" { // git's side: from the start
					withGit = newRepo(t)
					wt(withGit, from)
				}
				if date == "" {
					os.Unsetenv("GIT_COMMITTER_DATE") // reflog entries at the time, as in use
				} else {
					os.Setenv("GIT_COMMITTER_DATE", date)
				}
				renameBoth(t, withGit, withFiles, c.from, to, c.handled)
			})
		}
	}
}

// renameBoth renames from to to with git in withGit and with
// renameBranchFiles in withFiles, and compares the results.
func renameBoth(t *testing.T, withGit, withFiles *Repo, from, to string, wantHandled bool) {
	t.Helper()
	before := gitState(t, withFiles)
	_, gitErr := run(ctxT(t), withGit.Root, "branch", "-m", "--", from, to)
	handled, err := withFiles.renameBranchFiles(ctxT(t), from, to)
	if err != nil {
		t.Fatal(err)
	}
	if handled != wantHandled {
		t.Fatalf("handled = %v, want %v", handled, wantHandled)
	}
	if !handled {
		if d := diffStates(before, gitState(t, withFiles)); d != "" {
			t.Fatalf("not handled, but files changed:\n%s", d)
		}
		err := withFiles.RenameBranch(ctxT(t), from, to) // git's way
		if (err == nil) != (gitErr == nil) {
			t.Fatalf("RenameBranch: %v; git branch -m: %v", err, gitErr)
		}
	} else if gitErr != nil {
		t.Fatalf("git branch -m failed where the files path did not: %v", gitErr)
	}
	if d := diffStates(gitState(t, withGit), gitState(t, withFiles)); d != "" {
		t.Fatalf("after the rename, the files differ from git's:\n%s", d)
	}
}

// TestRenameBranchFilesStepsAsideForALock: a lock file of git's on any of
// the files a rename writes (a concurrent git command holds it) makes the
// files path write nothing and leave the lock alone.
func TestRenameBranchFilesStepsAsideForALock(t *testing.T) {
	const from, to = "grove/pool/abc", "grove/t1/work"
	for _, held := range []string{"refs/heads/" + from, "refs/heads/" + to, "worktrees/wt/HEAD", "packed-refs"} {
		t.Run(held, func(t *testing.T) {
			r := newRepo(t)
			git(t, r.Root, "worktree", "add", "-q", "-b", from, filepath.Join(filepath.Dir(r.Root), "wt"), "HEAD")
			lockPath := filepath.Join(r.CommonDir, filepath.FromSlash(held)) + ".lock"
			write(t, lockPath, "")
			before := gitState(t, r)
			handled, err := r.renameBranchFiles(ctxT(t), from, to)
			if err != nil || handled {
				t.Fatalf("handled = %v, err = %v with %s held", handled, err, held)
			}
			if d := diffStates(before, gitState(t, r)); d != "" {
				t.Fatalf("files changed:\n%s", d)
			}
		})
	}
}
