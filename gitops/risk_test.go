package gitops

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/grove-dev/grove/gitops/procscan"
	"github.com/matryer/is"
)

// gateSetup makes a repo whose .gitignore ignores *.secret and
// node_modules/, and a clean worktree on grove/g at main.
func gateSetup(t *testing.T) (*Repo, string) {
	t.Helper()
	r := newRepo(t)
	write(t, filepath.Join(r.Root, ".gitignore"), "*.secret\nnode_modules/\n")
	git(t, r.Root, "add", ".gitignore")
	git(t, r.Root, "commit", "-q", "-m", "ignore")
	wt := filepath.Join(t.TempDir(), "wt")
	if err := r.CreateWorktree(ctxT(t), wt, "grove/g", "main"); err != nil {
		t.Fatal(err)
	}
	return r, wt
}

func reasons(rep Report) []string {
	var s []string
	for _, r := range rep.Risks {
		s = append(s, r.Reason)
	}
	return s
}

func detail(rep Report, reason string) string {
	for _, r := range rep.Risks {
		if r.Reason == reason {
			return r.Detail
		}
	}
	return ""
}

func TestAtRiskCleanAndApplied(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	opt := GateOptions{Branch: "grove/g", AppliedRefs: []string{"refs/heads/main"}}

	rep := r.AtRisk(ctx, wt, opt)
	head := git(t, wt, "rev-parse", "HEAD")
	is.Equal(rep, Report{Path: wt, Safe: true, Risks: []Risk{}, Branch: "grove/g", BranchTip: head, Head: head,
		keep: DefaultKeepIgnored})
	b, err := json.Marshal(rep)
	is.NoErr(err)
	is.Equal(string(b), `{"path":"`+wt+`","safe":true,"risks":[],"branch":"grove/g","branch_tip":"`+head+`","head":"`+head+`"}`)

	// What the gate judged is recorded: the branch tip (none for a
	// branch that does not exist), HEAD, the options a re-check needs.
	rep = r.AtRisk(ctx, wt, GateOptions{Branch: "grove/nope", KeepIgnored: []string{"x"}, SkipProcesses: true})
	is.Equal(rep.Branch, "grove/nope")
	is.Equal(rep.BranchTip, "")
	is.Equal(rep.Head, head)
	is.Equal(rep.keep, []string{"x"})
	is.True(rep.skipProcs)
	rep = r.AtRisk(ctx, filepath.Join(t.TempDir(), "missing"), opt)
	is.Equal(rep.Head, "")
	is.Equal(rep.BranchTip, head)

	// Ignored files that are reproducible are fine.
	write(t, filepath.Join(wt, "node_modules", "dep", "index.js"), "x")
	is.True(r.AtRisk(ctx, wt, opt).Safe)

	// Work committed on the branch and applied (squashed) onto main.
	write(t, filepath.Join(wt, "README"), "changed\n")
	head, err = r.CommitAll(ctx, wt, "work")
	is.NoErr(err)
	rep = r.AtRisk(ctx, wt, opt)
	is.Equal(reasons(rep), []string{RiskUnapplied})
	is.Equal(detail(rep, RiskUnapplied), "1 commit(s) on grove/g that no other ref holds")
	_, err = r.Apply(ctx, "main", git(t, r.Root, "rev-parse", "main"), head, "applied")
	is.NoErr(err)
	is.Equal(reasons(r.AtRisk(ctx, wt, opt)), []string{RiskUnapplied}) // squashed: main does not hold it
	opt.AppliedRefs = append(opt.AppliedRefs, head, "refs/grove/applied/none-yet")
	is.True(r.AtRisk(ctx, wt, opt).Safe) // the applied head counts

	// A snapshot ref does not count as keeping the branch's commits.
	is.NoErr(r.SetRef(ctx, "refs/grove/snapshots/x", head))
	is.Equal(reasons(r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g"})), []string{RiskUnapplied})
	// Any other ref does.
	git(t, r.Root, "update-ref", "refs/heads/keep/it", head)
	is.True(r.AtRisk(ctx, wt, GateOptions{Branch: "grove/g"}).Safe)
}

func TestAtRiskReasons(t *testing.T) {
	for _, tc := range []struct {
		reason string
		setup  func(t *testing.T, r *Repo, wt string)
		opt    GateOptions
		detail string // substring
	}{
		{reason: RiskDirty, detail: "README", setup: func(t *testing.T, r *Repo, wt string) {
			write(t, filepath.Join(wt, "README"), "edit\n")
		}},
		{reason: RiskStaged, detail: "src/a.txt", setup: func(t *testing.T, r *Repo, wt string) {
			write(t, filepath.Join(wt, "src", "a.txt"), "edit\n")
			git(t, wt, "add", "src/a.txt")
		}},
		{reason: RiskUntracked, detail: "new dir/f 1", setup: func(t *testing.T, r *Repo, wt string) {
			write(t, filepath.Join(wt, "new dir", "f 1"), "new\n")
		}},
		{reason: RiskIgnored, detail: "keys.secret", setup: func(t *testing.T, r *Repo, wt string) {
			write(t, filepath.Join(wt, "keys.secret"), "s3cr3t\n")
		}},
		{reason: RiskIgnored, detail: "node_modules/", opt: GateOptions{KeepIgnored: []string{}}, setup: func(t *testing.T, r *Repo, wt string) {
			write(t, filepath.Join(wt, "node_modules", "x.js"), "x\n")
		}},
		{reason: RiskHiddenEdit, detail: "README (assume-unchanged)", setup: func(t *testing.T, r *Repo, wt string) {
			git(t, wt, "update-index", "--assume-unchanged", "README")
			write(t, filepath.Join(wt, "README"), "hidden edit\n")
		}},
		{reason: RiskHiddenEdit, detail: "src/a.txt (skip-worktree)", setup: func(t *testing.T, r *Repo, wt string) {
			git(t, wt, "update-index", "--skip-worktree", "src/a.txt")
			write(t, filepath.Join(wt, "src", "a.txt"), "hidden edit\n")
		}},
		{reason: RiskOperation, detail: "merge", setup: func(t *testing.T, r *Repo, wt string) {
			write(t, filepath.Join(wt, "README"), "ours\n")
			git(t, wt, "commit", "-q", "-am", "ours")
			git(t, wt, "branch", "theirs", "HEAD~1")
			git(t, wt, "checkout", "-q", "-b", "tmp", "theirs")
			write(t, filepath.Join(wt, "README"), "theirs\n")
			git(t, wt, "commit", "-q", "-am", "theirs")
			git(t, wt, "checkout", "-q", "grove/g")
			if _, err := run(ctxT(t), wt, "merge", "tmp"); err == nil {
				t.Fatal("merge did not conflict")
			}
		}},
		{reason: RiskOperation, detail: "bisect", setup: func(t *testing.T, r *Repo, wt string) {
			git(t, wt, "bisect", "start")
		}},
		{reason: RiskDetached, detail: "1 commit(s) at", setup: func(t *testing.T, r *Repo, wt string) {
			git(t, wt, "checkout", "-q", "--detach")
			git(t, wt, "commit", "-q", "--allow-empty", "-m", "detached")
		}},
		{reason: RiskUnapplied, detail: "2 commit(s) on grove/g", opt: GateOptions{Branch: "grove/g"}, setup: func(t *testing.T, r *Repo, wt string) {
			git(t, wt, "commit", "-q", "--allow-empty", "-m", "one")
			git(t, wt, "commit", "-q", "--allow-empty", "-m", "two")
		}},
		{reason: RiskStash, detail: "1 stash entry made on grove/g", opt: GateOptions{Branch: "grove/g"}, setup: func(t *testing.T, r *Repo, wt string) {
			write(t, filepath.Join(wt, "README"), "stashed\n")
			git(t, wt, "stash", "-q")
		}},
		{reason: RiskWorktreeRefs, detail: "refs/worktree/keep", setup: func(t *testing.T, r *Repo, wt string) {
			git(t, wt, "update-ref", "refs/worktree/keep", "HEAD")
		}},
		{reason: RiskLocked, detail: "in use", setup: func(t *testing.T, r *Repo, wt string) {
			git(t, r.Root, "worktree", "lock", "--reason", "in use", wt)
		}},
		{reason: RiskMissing, setup: func(t *testing.T, r *Repo, wt string) {
			if err := os.RemoveAll(wt); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			is := is.New(t)
			r, wt := gateSetup(t)
			tc.setup(t, r, wt)
			rep := r.AtRisk(ctxT(t), wt, tc.opt)
			is.True(!rep.Safe)
			is.True(rep.Has(tc.reason))
			is.True(strings.Contains(detail(rep, tc.reason), tc.detail)) // detail names it
			is.True(!rep.Has(RiskGitError))
		})
	}
}

func TestAtRiskProcess(t *testing.T) {
	is := is.New(t)
	r, wt := gateSetup(t)
	sub := filepath.Join(wt, "src")
	cmd := exec.Command("sleep", "600")
	cmd.Dir = sub
	is.NoErr(cmd.Start())
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	pids, err := procscan.In(wt)
	is.NoErr(err)
	is.Equal(pids, []int{cmd.Process.Pid})

	rep := r.AtRisk(ctxT(t), wt, GateOptions{})
	is.Equal(reasons(rep), []string{RiskProcess})
	is.Equal(detail(rep, RiskProcess), "pids "+strconv.Itoa(cmd.Process.Pid))
	is.True(r.AtRisk(ctxT(t), wt, GateOptions{SkipProcesses: true}).Safe)

	// Our own process is never counted.
	is.NoErr(os.Chdir(sub))
	t.Cleanup(func() { os.Chdir("/") })
	pids, err = procscan.In(wt)
	is.NoErr(err)
	is.Equal(pids, []int{cmd.Process.Pid})
}

func TestAtRiskSubmodule(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	lib := filepath.Join(t.TempDir(), "lib")
	git(t, "", "init", "-q", "-b", "main", lib)
	write(t, filepath.Join(lib, "lib.txt"), "lib\n")
	git(t, lib, "add", "-A")
	git(t, lib, "commit", "-q", "-m", "lib")

	r := newRepo(t)
	git(t, r.Root, "-c", "protocol.file.allow=always", "submodule", "add", "-q", lib, "lib")
	git(t, r.Root, "commit", "-q", "-m", "sub")
	wt := filepath.Join(t.TempDir(), "wt")
	is.NoErr(r.CreateWorktree(ctx, wt, "grove/s", "main"))
	git(t, wt, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init")
	is.True(r.AtRisk(ctx, wt, GateOptions{Branch: "grove/s"}).Safe) // checked out at the recorded commit

	git(t, filepath.Join(wt, "lib"), "commit", "-q", "--allow-empty", "-m", "local commit in submodule")
	rep := r.AtRisk(ctx, wt, GateOptions{Branch: "grove/s"})
	is.Equal(reasons(rep), []string{RiskSubmodule, RiskSubCommits})
	is.Equal(detail(rep, RiskSubmodule), "lib")
	is.Equal(detail(rep, RiskSubCommits), "lib (1 commit(s) only this worktree's module store holds)")
}

func TestAtRiskGitError(t *testing.T) {
	is := is.New(t)
	ctx := ctxT(t)
	r, wt := gateSetup(t)
	other := newRepo(t)
	otherWT := filepath.Join(t.TempDir(), "other")
	is.NoErr(other.CreateWorktree(ctx, otherWT, "grove/o", "main"))
	plain := t.TempDir()

	for name, p := range map[string]string{
		"not a worktree":   plain,
		"subdirectory":     filepath.Join(wt, "src"),
		"main worktree":    r.Root,
		"other repository": otherWT,
		"broken .git":      wt,
	} {
		if name == "broken .git" {
			write(t, filepath.Join(wt, ".git"), "gitdir: /nonexistent\n")
		}
		rep := r.AtRisk(ctx, p, GateOptions{})
		is.True(!rep.Safe)
		is.True(rep.Has(RiskGitError)) // fail closed
		is.True(detail(rep, RiskGitError) != "")
	}
	rep := r.AtRisk(ctx, wt, GateOptions{AppliedRefs: []string{"--all"}})
	is.True(rep.Has(RiskGitError))
}
