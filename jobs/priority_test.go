package jobs

import "testing"

// TestFinishingComesBeforeStarting pins the git queue's order: a task
// whose agent is done is diffed and applied before another worktree is
// created, and pool refills come last.
func TestFinishingComesBeforeStarting(t *testing.T) {
	diff, apply := DiffArgs{}.InsertOpts(), ApplyArgs{}.InsertOpts()
	create, pool := CreateWorktreeArgs{}.InsertOpts(), PoolFillArgs{}.InsertOpts()
	if diff.Queue != create.Queue || apply.Queue != create.Queue {
		t.Fatalf("diff, apply and create share the git queue: %q %q %q", diff.Queue, apply.Queue, create.Queue)
	}
	if !(diff.Priority < create.Priority && apply.Priority < create.Priority && create.Priority < pool.Priority) {
		t.Fatalf("priorities: diff %d, apply %d, create %d, pool %d", diff.Priority, apply.Priority, create.Priority, pool.Priority)
	}
}
