package grove

import (
	"context"
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// The one helper for flock(2) locks: grove's locks (repository, removal,
// trash, run, daemon, migration) are flocks on files, which the kernel
// releases when the last descriptor of the open file description closes,
// so a SIGKILLed holder never leaves one behind. Two descriptors opened
// separately exclude each other even within one process.

// TryFlock takes lock how (unix.LOCK_EX or unix.LOCK_SH) on f without
// waiting. ok is false when a conflicting lock is held elsewhere; err is
// any other failure.
func TryFlock(f *os.File, how int) (ok bool, err error) {
	for {
		err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if errors.Is(err, unix.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}

// Flock takes (or converts to) lock how on f, waiting until it is free or
// ctx ends. A blocked flock(2) cannot be interrupted: when ctx ends first,
// Flock returns ctx.Err() and f is closed once the call returns, so the
// caller must not use f after an error.
func Flock(ctx context.Context, f *os.File, how int) error {
	ok, err := TryFlock(f, how) // fast path: uncontended
	if ok || err != nil {
		if err != nil {
			f.Close()
		}
		return err
	}
	done := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(int(f.Fd()), how)
			if !errors.Is(err, unix.EINTR) {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
		}
		return err
	case <-ctx.Done():
		go func() {
			<-done
			f.Close()
		}()
		return ctx.Err()
	}
}

// OpenFlock opens path (creating it with mode perm) and takes lock how,
// waiting as Flock does. The lock is released by closing the file.
func OpenFlock(ctx context.Context, path string, how int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, perm)
	if err != nil {
		return nil, err
	}
	if err := Flock(ctx, f, how); err != nil {
		return nil, err
	}
	return f, nil
}

// TryOpenFlock opens path (creating it with mode perm) and takes lock how
// without waiting. ok is false (and f nil) when it is held elsewhere.
func TryOpenFlock(path string, how int, perm os.FileMode) (f *os.File, ok bool, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, perm)
	if err != nil {
		return nil, false, err
	}
	if ok, err = TryFlock(f, how); !ok {
		f.Close()
		return nil, false, err
	}
	return f, true, nil
}

// FlockHeld reports whether a process holds an exclusive flock on path
// right now (probed with a shared lock released at once). A missing or
// unreadable file is not held.
func FlockHeld(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	ok, _ := TryFlock(f, unix.LOCK_SH)
	if ok {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	}
	return !ok
}
