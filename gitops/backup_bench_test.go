package gitops

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// dirBytes is the size of the regular files under dir.
func dirBytes(tb testing.TB, dir string) int64 {
	tb.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// BenchmarkBackup100Snapshots measures what a backup sends: 100
// snapshots (each adds a 16 KiB file of its own to one worktree) pushed
// to an empty bare remote, then again with nothing changed, then with one
// new snapshot. Figures: time, refs, estimated bytes (plan) and bytes the
// remote's object store grew by. Run it with
//
//	go test ./gitops -run '^$' -bench Backup100 -benchtime 1x
func BenchmarkBackup100Snapshots(b *testing.B) {
	for i := 0; i < b.N; i++ {
		benchBackup(b)
	}
}

func benchBackup(b *testing.B) {
	ctx := ctxT(&testing.T{})
	r := newRepo(b)
	wt := filepath.Join(b.TempDir(), "wt")
	if err := r.CreateWorktree(ctx, wt, "grove/bench/work", "main"); err != nil {
		b.Fatal(err)
	}
	snap := func(i int) {
		var content strings.Builder
		for j := 0; content.Len() < 16<<10; j++ {
			fmt.Fprintf(&content, "%x\n", sha256.Sum256([]byte(fmt.Sprint(i, j))))
		}
		write(b, filepath.Join(wt, fmt.Sprintf("f%03d.txt", i)), content.String())
		if _, err := r.Snapshot(ctx, wt, fmt.Sprintf("%ss%03d", SnapshotsPrefix, i), false); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 100; i++ {
		snap(i)
	}
	remote := filepath.Join(b.TempDir(), "backup.git")
	git(b, "", "init", "-q", "--bare", remote)
	ns, _ := BackupNamespace("bench", RepoKey(r.Root))
	step := func(name string) {
		before := dirBytes(b, filepath.Join(remote, "objects"))
		start := time.Now()
		plan, err := r.PlanBackup(ctx, remote, ns, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := r.PushBackup(ctx, plan); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		grew := dirBytes(b, filepath.Join(remote, "objects")) - before
		b.Logf("%-28s %4d refs sent, %4d unchanged, %5d objects, plan %8d B, remote grew %8d B, %v",
			name, len(plan.Refs), plan.Unchanged, plan.Objects, plan.Bytes, grew, took.Round(time.Millisecond))
	}
	bundles := b.TempDir()
	have := map[string]string{}
	bundleStep := func(name string) {
		start := time.Now()
		plan, err := r.PlanBundle(ctx, ns, have, nil)
		if err != nil {
			b.Fatal(err)
		}
		plan.Remote = bundles
		size := int64(0)
		if len(plan.Refs) > 0 {
			file := filepath.Join(bundles, fmt.Sprintf("%d.bundle", len(have)))
			if _, err := r.WriteBundle(ctx, plan, have, file); err != nil {
				b.Fatal(err)
			}
			size = dirBytes(b, file)
			for _, ref := range plan.Refs {
				have[ref.Name] = ref.New
			}
		}
		b.Logf("%-28s %4d refs, bundle %8d B, %v", "bundle "+name, len(plan.Refs), size, time.Since(start).Round(time.Millisecond))
	}
	step("first (100 snapshots)")
	bundleStep("first (100 snapshots)")
	step("second (nothing changed)")
	bundleStep("second (nothing changed)")
	snap(100)
	step("third (1 new snapshot)")
	bundleStep("third (1 new snapshot)")
}
