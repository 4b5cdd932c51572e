package jobs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
)

// The reaper's pass applies the trash's retention: an entry older than
// TrashKeep is purged (its commits unpinned), one within it is not; and a
// worktree the reaper removes goes to the trash first.
func TestReaperPassPurgesTrash(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	_, a := e.task(grove.StateCanceled)
	_, b := e.task(grove.StateCanceled)
	var entries []gitops.TrashEntry
	for _, wt := range []string{a, b} {
		te, err := e.repo.Retire(e.ctx, wt, "", e.d.TrashDir(), gitops.Report{}, gitops.RetireOptions{Force: true})
		is.NoErr(err)
		entries = append(entries, te)
	}
	ta, tb := entries[0].Manifest.Time, entries[1].Manifest.Time
	is.True(ta.Before(tb))
	e.d.TrashKeep = time.Hour
	now := ta.Add(time.Hour + tb.Sub(ta)/2) // a is past keep, b within it
	w := &ReapWorker{d: e.d, grace: time.Hour, now: func() time.Time { return now }}

	// A dry run purges nothing.
	is.NoErr(w.Work(e.ctx, &river.Job[ReapArgs]{Args: ReapArgs{DryRun: true}}))
	is.True(exists(entries[0].Dir))

	is.NoErr(w.Work(e.ctx, &river.Job[ReapArgs]{Args: ReapArgs{}}))
	is.True(!exists(entries[0].Dir))
	is.True(exists(entries[1].Dir))
	list, err := gitops.ListTrash(e.d.TrashDir(), now)
	is.NoErr(err)
	is.True(trashHas(list, func(i gitops.TrashInfo) bool { return i.Dir == entries[1].Dir }))
	is.True(!trashHas(list, func(i gitops.TrashInfo) bool { return i.Dir == entries[0].Dir }))

	// The reaper's own removal of a finished task's worktree lands in the
	// trash too.
	_, c := e.task(grove.StateCanceled)
	rep := e.reap(2*time.Hour, false)
	is.Equal(itemOf(rep, c).Action, ReapRemoved)
	is.True(!exists(c))
	list, err = gitops.ListTrash(e.d.TrashDir(), time.Now())
	is.NoErr(err)
	is.True(trashHas(list, func(i gitops.TrashInfo) bool {
		return filepath.Base(i.Manifest.Path) == filepath.Base(c) && !i.Manifest.Missing
	}))
}

// trashHas reports whether some entry of list satisfies ok.
func trashHas(list []gitops.TrashInfo, ok func(gitops.TrashInfo) bool) bool {
	for _, i := range list {
		if ok(i) {
			return true
		}
	}
	return false
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
