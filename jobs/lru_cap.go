package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
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

// LRUCap evicts the least recently used idle live sessions until at most
// max are live; a busy session is never evicted, nor `keep`. It returns the
// keys evicted.
func LRUCap(ctx context.Context, d *Deps, max int, keep string) ([]string, error) {
	if max <= 0 {
		return nil, nil
	}
	sessions, err := d.Store.Sessions(ctx, false) // least recently used first
	if err != nil {
		return nil, err
	}
	live := 0
	for _, s := range sessions {
		if s.State == grove.SessionLive {
			live++
		}
	}
	var out []string
	for _, s := range sessions {
		if live <= max {
			break
		}
		if s.State != grove.SessionLive || s.ID == keep {
			continue
		}
		busy, err := d.sessionBusy(ctx, s.ID)
		if err != nil {
			return out, err
		}
		if busy {
			continue
		}
		if err := d.evict(ctx, s.ID, fmt.Sprintf("least recently used beyond the cap of %d live sessions", max)); err != nil {
			return out, err
		}
		out = append(out, s.ID)
		live--
	}
	return out, nil
}

func (d *Deps) sessionBusy(ctx context.Context, key string) (bool, error) {
	var busy bool
	err := d.Store.Read(ctx, func(tx *store.Tx) error {
		var err error
		busy, err = tx.SessionBusy(ctx, key, "", false)
		return err
	})
	return busy, err
}
