package grove

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/matryer/is"
	"golang.org/x/sys/unix"
)

// Two descriptors of one file exclude each other; Flock waits for the
// holder, gives up with ctx, and FlockHeld sees only exclusive holders.
func TestFlock(t *testing.T) {
	is := is.New(t)
	path := filepath.Join(t.TempDir(), "x.lock")
	is.True(!FlockHeld(path)) // missing: not held

	a, ok, err := TryOpenFlock(path, unix.LOCK_EX, 0o600)
	is.NoErr(err)
	is.True(ok)
	is.True(FlockHeld(path))
	b, ok, err := TryOpenFlock(path, unix.LOCK_EX, 0o600)
	is.NoErr(err)
	is.True(!ok)
	is.True(b == nil)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = OpenFlock(ctx, path, unix.LOCK_SH, 0o600)
	is.True(errors.Is(err, context.DeadlineExceeded))

	got := make(chan error, 1)
	go func() {
		f, err := OpenFlock(context.Background(), path, unix.LOCK_EX, 0o600)
		if err == nil {
			f.Close() // before the answer: the test then checks nobody holds it
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("took a held lock: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	a.Close() // release: the waiter gets it
	is.NoErr(<-got)
	is.True(!FlockHeld(path))

	s1, ok, err := TryOpenFlock(path, unix.LOCK_SH, 0o600)
	is.NoErr(err)
	is.True(ok)
	defer s1.Close()
	is.True(!FlockHeld(path)) // a shared holder is not "held"
	s2, ok, err := TryOpenFlock(path, unix.LOCK_SH, 0o600)
	is.NoErr(err)
	is.True(ok)
	s2.Close()
}
