package jobs

import (
	"context"
	"os"
	"time"
)

// HeartbeatEvery is how often a daemon records that its host is alive.
const HeartbeatEvery = 10 * time.Second

// Heartbeat records the daemon's host as alive now and every
// HeartbeatEvery until ctx ends, on PostgreSQL (store.Heartbeat); `grove doctor` lists
// the hosts it has not heard from for a while. A failed beat is logged
// and the next one tried.
func Heartbeat(ctx context.Context, d *Deps) {
	if !d.Store.Postgres() {
		return // one box: its daemon lock says it all
	}
	started := time.Now()
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	for {
		if err := d.Store.Heartbeat(ctx, os.Getpid(), started); err != nil && ctx.Err() == nil {
			d.Logger.Warn("heartbeat", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
