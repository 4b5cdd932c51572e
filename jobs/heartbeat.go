package jobs

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/grove-dev/grove/store"
)

// HeartbeatEvery is how often a daemon records that its host is alive.
const HeartbeatEvery = 10 * time.Second

// Heartbeat records the daemon's host as alive now and every
// HeartbeatEvery until ctx ends, on PostgreSQL (store.Heartbeat); `grove doctor` lists
// the hosts it has not heard from for a while. A failed beat is logged
// and the next one tried; a beat that finds the host claimed by another
// daemon (store.ErrHostTaken: this one was silent too long) calls taken
// with the error and stops beating: two daemons must not serve one host.
func Heartbeat(ctx context.Context, d *Deps, taken func(error)) {
	if !d.Store.Postgres() {
		return // one box: its daemon lock says it all
	}
	started := time.Now()
	t := time.NewTicker(HeartbeatEvery)
	defer t.Stop()
	for {
		err := d.Store.Heartbeat(ctx, os.Getpid(), started)
		switch {
		case err == nil, ctx.Err() != nil:
		case errors.Is(err, store.ErrHostTaken):
			taken(err)
			return
		default:
			d.Logger.Warn("heartbeat", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
