package gitops

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkAtRisk10k times the gate on a clean worktree of 10,000
// tracked files in 100 directories, with a reproducible node_modules of
// 2,000 ignored files (which the nested-repository walk reads).
func BenchmarkAtRisk10k(b *testing.B) {
	r := newRepo(b)
	write(b, filepath.Join(r.Root, ".gitignore"), "node_modules/\n")
	for i := 0; i < 10000; i++ {
		write(b, filepath.Join(r.Root, fmt.Sprintf("d%03d", i/100), fmt.Sprintf("f%05d.txt", i)), fmt.Sprintf("file %d\n", i))
	}
	git(b, r.Root, "add", "-A")
	git(b, r.Root, "commit", "-q", "-m", "10k")
	wt := filepath.Join(b.TempDir(), "wt")
	if err := r.CreateWorktree(context.Background(), wt, "grove/b", "main"); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 2000; i++ {
		write(b, filepath.Join(wt, "node_modules", fmt.Sprintf("p%02d", i/100), fmt.Sprintf("m%04d.js", i)), "x\n")
	}
	opt := GateOptions{Branch: "grove/b", AppliedRefs: []string{"main"}}
	if rep := r.AtRisk(context.Background(), wt, opt); !rep.Safe {
		b.Fatal(rep.Risks)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if rep := r.AtRisk(context.Background(), wt, opt); !rep.Safe {
			b.Fatal(rep.Risks)
		}
	}
}

// BenchmarkGateAddedChecks times, on the same kind of worktree, only the
// checks issue 9 added: the nested-repository walk of the ignored
// directories git reported, the HEAD reflog check and the submodule store
// check.
func BenchmarkGateAddedChecks(b *testing.B) {
	r := newRepo(b)
	write(b, filepath.Join(r.Root, ".gitignore"), "node_modules/\n")
	for i := 0; i < 10000; i++ {
		write(b, filepath.Join(r.Root, fmt.Sprintf("d%03d", i/100), fmt.Sprintf("f%05d.txt", i)), fmt.Sprintf("file %d\n", i))
	}
	git(b, r.Root, "add", "-A")
	git(b, r.Root, "commit", "-q", "-m", "10k")
	wt := filepath.Join(b.TempDir(), "wt")
	ctx := context.Background()
	if err := r.CreateWorktree(ctx, wt, "grove/b", "main"); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 2000; i++ {
		write(b, filepath.Join(wt, "node_modules", fmt.Sprintf("p%02d", i/100), fmt.Sprintf("m%04d.js", i)), "x\n")
	}
	gd, err := GitDirOf(wt)
	if err != nil {
		b.Fatal(err)
	}
	head := git(b, wt, "rev-parse", "HEAD")
	for _, c := range []struct {
		name string
		f    func(rs *riskSet)
	}{
		{"nested walk", func(rs *riskSet) { checkNested(ctx, wt, []string{"node_modules/"}, rs) }},
		{"reflog", func(rs *riskSet) { r.checkReflog(ctx, wt, nil, []string{head, "main"}, rs) }},
		{"submodule stores", func(rs *riskSet) { r.checkSubCommits(ctx, wt, gd, false, rs) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				rs := newRiskSet()
				c.f(rs)
				if len(rs.risks()) > 0 {
					b.Fatal(rs.risks())
				}
			}
		})
	}
}
