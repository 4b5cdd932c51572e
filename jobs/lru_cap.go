package jobs

import (
	"context"
	"time"

	"github.com/riverqueue/river"
)

// LRUCapArgs is the periodic live-session cap pass.
type LRUCapArgs struct{}

// Kind is stable: it is stored in river_job rows.
func (LRUCapArgs) Kind() string { return "lru_cap" }

// InsertOpts puts the job on the maintenance queue.
func (LRUCapArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: QueueMaintenance, MaxAttempts: 1}
}

// LRUCapWorker runs LRUCap with the daemon's cap.
type LRUCapWorker struct {
	river.WorkerDefaults[LRUCapArgs]
	d *Deps
}

// Timeout bounds one pass.
func (w *LRUCapWorker) Timeout(*river.Job[LRUCapArgs]) time.Duration { return 5 * time.Minute }

// Work evicts least recently used idle sessions beyond the cap.
func (w *LRUCapWorker) Work(ctx context.Context, _ *river.Job[LRUCapArgs]) error {
	evicted, err := LRUCap(ctx, w.d, w.d.MaxLive, "")
	if len(evicted) > 0 {
		w.d.Logger.Info("evicted sessions over the cap", "sessions", evicted)
	}
	return err
}
