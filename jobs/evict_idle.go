package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"
)

// EvictIdleArgs is the periodic idle-TTL eviction pass.
type EvictIdleArgs struct{}

// Kind is stable: it is stored in river_job rows.
func (EvictIdleArgs) Kind() string { return "evict_idle" }

// InsertOpts puts the job on the maintenance queue.
func (EvictIdleArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 1}
}

// EvictIdleWorker runs EvictIdle with the daemon's clock and TTL.
type EvictIdleWorker struct {
	river.WorkerDefaults[EvictIdleArgs]
	d *Deps
}

// Timeout bounds one pass.
func (w *EvictIdleWorker) Timeout(*river.Job[EvictIdleArgs]) time.Duration { return 5 * time.Minute }

// Work evicts sessions idle past the TTL.
func (w *EvictIdleWorker) Work(ctx context.Context, _ *river.Job[EvictIdleArgs]) error {
	evicted, err := EvictIdle(ctx, w.d, w.d.Now(), w.d.IdleTTL)
	if len(evicted) > 0 {
		w.d.Logger.Info("evicted idle sessions", "sessions", evicted)
	}
	return err
}
