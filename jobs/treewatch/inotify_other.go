//go:build !linux

package treewatch

// New fails: there is no inotify here, so callers verify every time.
func New() (*Watcher, error) { return nil, ErrUnsupported }

// Close does nothing.
func (w *Watcher) Close() error { return nil }

func (w *Watcher) add(string, *Tree) (int32, error) { return 0, ErrUnsupported }
func (w *Watcher) rm(int32)                         {}
func (w *Watcher) drainLocked()                     {}
