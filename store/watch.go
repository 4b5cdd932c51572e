package store

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Commits tells a waiting process that someone may have committed to the
// database, so that it reads again instead of polling on a short timer: a
// `grove wait` or `grove close` that polled every 50 ms for the whole life
// of a task spent more CPU than some of its stages. It watches the
// database's directory with inotify for writes to grove.db and its WAL
// (every commit appends to grove.db-wal; a checkpoint writes grove.db).
// Wake-ups are hints: a caller re-reads what it waits for after each one,
// and still after at most the fallback interval it passes to Wait (a
// watch can miss nothing that matters, but a kernel without inotify, or
// one out of watches, leaves only the timer).
//
// On PostgreSQL there is no file to watch: every grove transaction
// NOTIFYs channel grove_commit as it commits (InTx), and the watcher
// LISTENs on a connection of its own (watchPG).
type Commits struct {
	fd  int // inotify descriptor; -1: timer only (or PostgreSQL)
	buf [4096]byte

	notes <-chan struct{} // PostgreSQL: a commit was notified; nil: none
	stop  func()          // PostgreSQL: ends the listener
}

// WatchCommits starts watching s's database. Close the result when done.
func (s *Store) WatchCommits() *Commits {
	c := &Commits{fd: -1}
	if s.pg {
		s.watchPG(c)
		return c
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return c
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(s.path), unix.IN_MODIFY|unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		return c
	}
	c.fd = fd
	return c
}

// Wait returns after a write to the database, after max, or when ctx
// ends (with its error). It may return early for a write that changed
// nothing the caller cares about.
func (c *Commits) Wait(ctx context.Context, max time.Duration) error {
	deadline := time.Now().Add(max)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		if c.fd < 0 {
			t := time.NewTimer(left)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
				return nil
			case <-c.notes: // never ready when nil
				t.Stop()
				return nil
			}
		}
		// Poll in slices of at most 100 ms so that ctx is noticed.
		ms := min(left, 100*time.Millisecond).Milliseconds() + 1
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}, int(ms))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return nil // the timer alone from now on is the caller's loop
		}
		if n > 0 && c.drainDB() {
			return nil
		}
	}
}

// drainDB reads the pending events and reports whether one was about the
// database or its WAL.
func (c *Commits) drainDB() bool {
	hit := false
	for {
		n, err := unix.Read(c.fd, c.buf[:])
		if n <= 0 || err != nil {
			return hit
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&c.buf[off]))
			nameLen := int(ev.Len)
			name := c.buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+nameLen]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			switch string(name) {
			case "grove.db", "grove.db-wal":
				hit = true
			}
			off += unix.SizeofInotifyEvent + nameLen
		}
	}
}

// Close stops watching.
func (c *Commits) Close() {
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}
