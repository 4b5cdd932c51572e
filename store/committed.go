package store

import "sync"

// commitSignal tells this process's waiters that it committed a
// transaction: Committed returns a channel that the next commit closes.
type commitSignal struct {
	mu sync.Mutex
	ch chan struct{}
}

// Committed returns a channel closed once this Store (this process) has
// committed another transaction with InTx, where every change to a task
// is made. Commits by other processes do not close it: a waiter that must
// see those too looks again on a timer as well (or uses WatchCommits).
func (s *Store) Committed() <-chan struct{} {
	c := s.commits
	if c == nil {
		return nil // a Store not made by Open: never
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(chan struct{})
	}
	return c.ch
}

// committed closes the channel Committed handed out, if any.
func (s *Store) committed() {
	c := s.commits
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.ch != nil {
		close(c.ch)
		c.ch = nil
	}
	c.mu.Unlock()
}
