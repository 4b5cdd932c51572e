//go:build linux

package treewatch

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"
)

// mask is every event that means the tree's content or shape changed.
const mask = syscall.IN_MODIFY | syscall.IN_ATTRIB | syscall.IN_CLOSE_WRITE |
	syscall.IN_CREATE | syscall.IN_DELETE | syscall.IN_DELETE_SELF |
	syscall.IN_MOVE_SELF | syscall.IN_MOVED_FROM | syscall.IN_MOVED_TO |
	syscall.IN_DONT_FOLLOW | syscall.IN_ONLYDIR

// New opens an inotify instance (non-blocking: events are read when a tree
// is asked whether it changed).
func New() (*Watcher, error) {
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	return &Watcher{fd: fd, trees: map[int32]*Tree{}, buf: make([]byte, 64<<10)}, nil
}

// Close releases the inotify instance; every tree then reads as changed.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range w.trees {
		t.closed = true
	}
	w.trees = map[int32]*Tree{}
	if w.fd < 0 {
		return nil
	}
	err := syscall.Close(w.fd)
	w.fd = -1
	return err
}

func (w *Watcher) add(path string, t *Tree) (int32, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		return 0, errors.New("watcher closed")
	}
	wd, err := syscall.InotifyAddWatch(w.fd, path, mask)
	if err != nil {
		return 0, err
	}
	if old := w.trees[int32(wd)]; old != nil && old != t {
		// The same directory in two trees (nested roots): the kernel
		// shares one descriptor, so the older tree can no longer be told
		// apart; it reads as changed.
		old.changed = true
	}
	w.trees[int32(wd)] = t
	return int32(wd), nil
}

func (w *Watcher) rm(wd int32) {
	if w.fd >= 0 {
		_, _ = syscall.InotifyRmWatch(w.fd, uint32(wd))
	}
}

// drainLocked reads every queued event and marks the trees they belong to.
func (w *Watcher) drainLocked() {
	for w.fd >= 0 {
		n, err := syscall.Read(w.fd, w.buf)
		if err != nil || n <= 0 {
			if err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR) {
				w.allChangedLocked() // cannot tell: distrust every tree
			}
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&syscall.IN_Q_OVERFLOW != 0 {
				w.allChangedLocked()
				continue
			}
			if t := w.trees[ev.Wd]; t != nil {
				t.changed = true
			}
			if ev.Mask&syscall.IN_IGNORED != 0 {
				delete(w.trees, ev.Wd) // the kernel dropped the watch
			}
		}
	}
}

func (w *Watcher) allChangedLocked() {
	for _, t := range w.trees {
		t.changed = true
	}
}
