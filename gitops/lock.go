package gitops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/grove-dev/grove"
	"golang.org/x/sys/unix"
)

// LockFile is the name of the per-repository lock file in the git common dir.
const LockFile = "grove.lock"

// procLocks serialises goroutines of this process per common dir before
// they queue on flock, so that at most one goroutine per repository sits
// in a blocking flock system call.
var procLocks sync.Map // common dir -> chan struct{} (capacity 1)

func procLock(dir string) chan struct{} {
	ch, _ := procLocks.LoadOrStore(dir, make(chan struct{}, 1))
	return ch.(chan struct{})
}

// Lock takes the per-repository lock: flock(LOCK_EX) on
// <CommonDir>/grove.lock, held across goroutines and processes alike. It
// blocks until the lock is held or ctx is done (then it returns ctx's
// error and holds nothing). The returned unlock releases it; calling
// unlock more than once is harmless. The lock is not reentrant: a holder
// that calls Lock again deadlocks until its ctx ends.
func (r *Repo) Lock(ctx context.Context) (unlock func(), err error) {
	sem := procLock(r.CommonDir)
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("lock %s: %w", r.CommonDir, ctx.Err())
	}
	f, err := flockFile(ctx, filepath.Join(r.CommonDir, LockFile))
	if err != nil {
		<-sem
		return nil, fmt.Errorf("lock %s: %w", r.CommonDir, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			f.Close() // closing the only descriptor releases the flock
			<-sem
		})
	}, nil
}

// flockFile opens path (creating it) and takes an exclusive flock on a
// descriptor of its own, waiting until ctx ends.
func flockFile(ctx context.Context, path string) (*os.File, error) {
	return grove.OpenFlock(ctx, path, unix.LOCK_EX, 0o644)
}
