package gitops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
)

// keptCount is how many kept update-ref processes run.
func keptCount() int {
	updaters.Lock()
	defer updaters.Unlock()
	return len(updaters.procs)
}

// Kept update-ref processes do what one-shot ones do — create, update,
// delete with compare-and-swap, reflog messages — one process per
// repository and message across transactions; a refused transaction is
// git's error and the next one runs in a fresh process; a process killed
// behind grove's back is replaced without losing the update; concurrent
// updates each land.
func TestKeptRefUpdates(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	KeepRefUpdaters(true) // (TestMain's setting; closes what other tests left)
	r := newRepo(t)
	head := git(t, r.Root, "rev-parse", "HEAD")
	write(t, filepath.Join(r.Root, "b.txt"), "b\n")
	git(t, r.Root, "add", "-A")
	git(t, r.Root, "commit", "-q", "-m", "second")
	second := git(t, r.Root, "rev-parse", "HEAD")

	is.NoErr(updateRefs(ctx, r.CommonDir, "grove: create branch", "create refs/heads/grove/k/work "+head))
	is.NoErr(r.SetRef(ctx, "refs/grove/tasks/k", second))
	is.Equal(keptCount(), 2) // one per message
	updaters.Lock()
	first := updaters.procs[updaterKey{r.CommonDir, "grove"}]
	updaters.Unlock()
	is.NoErr(r.SetRef(ctx, "refs/grove/tasks/k2", head))
	updaters.Lock()
	is.True(updaters.procs[updaterKey{r.CommonDir, "grove"}] == first) // the same process, kept
	updaters.Unlock()
	is.Equal(git(t, r.Root, "rev-parse", "refs/heads/grove/k/work"), head)
	is.Equal(git(t, r.Root, "rev-parse", "refs/grove/tasks/k"), second)
	is.True(strings.Contains(git(t, r.Root, "reflog", "show", "--format=%gs", "refs/heads/grove/k/work"), "grove: create branch"))

	// Refused: the branch exists. git's message; the next update works.
	err := updateRefs(ctx, r.CommonDir, "grove: create branch", "create refs/heads/grove/k/work "+second)
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), "already exists"))
	is.True(!transient(err))
	is.Equal(git(t, r.Root, "rev-parse", "refs/heads/grove/k/work"), head)
	// A compare-and-swap that lost: nothing deleted.
	err = r.deleteRef(ctx, "refs/heads/grove/k/work", second)
	is.True(err != nil)
	is.Equal(git(t, r.Root, "rev-parse", "refs/heads/grove/k/work"), head)
	is.NoErr(r.deleteRef(ctx, "refs/heads/grove/k/work", head))
	_, err = os.Stat(filepath.Join(r.CommonDir, "logs", "refs", "heads", "grove", "k", "work"))
	is.True(os.IsNotExist(err)) // its reflog went with it
	// A packed ref is deleted from packed-refs too.
	git(t, r.Root, "pack-refs", "--all")
	is.NoErr(r.deleteRef(ctx, "refs/grove/tasks/k", second))
	is.Equal(git(t, r.Root, "for-each-ref", "refs/grove/tasks/k"), "")

	// Killed behind our back: the update still lands, in a new process.
	updaters.Lock()
	u := updaters.procs[updaterKey{r.CommonDir, "grove"}]
	updaters.Unlock()
	is.True(u != nil)
	is.NoErr(u.cmd.Process.Kill())
	waitExited(t, u.cmd.Process.Pid)
	is.NoErr(r.SetRef(ctx, "refs/grove/tasks/after-kill", second))
	is.Equal(git(t, r.Root, "rev-parse", "refs/grove/tasks/after-kill"), second)

	// Concurrent updates all land.
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Go(func() { errs <- r.SetRef(ctx, "refs/grove/tasks/c"+string(rune('a'+i)), second) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		is.NoErr(err)
	}
	is.Equal(len(strings.Split(git(t, r.Root, "for-each-ref", "--format=%(refname)", "refs/grove/tasks/c*"), "\n")), 16)

	// Refusals and cancellations by one caller end the shared process;
	// the others' updates still land.
	errs = make(chan error, 64)
	var wg2 sync.WaitGroup
	stopRefusing := make(chan struct{})
	wg2.Go(func() {
		for {
			select {
			case <-stopRefusing:
				return
			default:
			}
			_ = updateRefs(ctx, r.CommonDir, "grove", "create refs/grove/tasks/after-kill "+second) // exists: refused
			cctx, cancel := context.WithTimeout(ctx, time.Duration(len(errs))*time.Microsecond)
			_ = r.SetRef(cctx, "refs/grove/tasks/racing", second)
			cancel()
		}
	})
	var valid sync.WaitGroup
	for i := range 3 {
		valid.Go(func() {
			for j := range 15 {
				errs <- r.SetRef(ctx, fmt.Sprintf("refs/grove/tasks/v%d-%d", i, j), second)
			}
		})
	}
	valid.Wait()
	close(stopRefusing)
	wg2.Wait()
	close(errs)
	for err := range errs {
		is.NoErr(err)
	}

	// A repository moved away: the updates go to the one now at the path.
	moved := r.Root + "-moved"
	is.NoErr(os.Rename(r.Root, moved))
	git(t, "", "clone", "-q", moved, r.Root)
	is.NoErr(r.SetRef(ctx, "refs/grove/tasks/after-move", second))
	is.Equal(git(t, r.Root, "rev-parse", "refs/grove/tasks/after-move"), second)
	is.Equal(git(t, moved, "for-each-ref", "refs/grove/tasks/after-move"), "")

	// A cancelled context ends its transaction's process with ctx's error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = r.SetRef(cctx, "refs/grove/tasks/cancelled", second)
	is.True(err != nil)

	// Off: the kept processes are closed, updates are one-shot.
	KeepRefUpdaters(false)
	is.Equal(keptCount(), 0)
	is.NoErr(r.SetRef(ctx, "refs/grove/tasks/oneshot", second))
	is.Equal(keptCount(), 0)
	is.Equal(git(t, r.Root, "rev-parse", "refs/grove/tasks/oneshot"), second)
	KeepRefUpdaters(true)
}
