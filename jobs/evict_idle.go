package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
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

// Work evicts sessions idle past the TTL and frees the ports of sessions
// whose service has been down longer than the port lease.
func (w *EvictIdleWorker) Work(ctx context.Context, _ *river.Job[EvictIdleArgs]) error {
	evicted, err := EvictIdle(ctx, w.d, w.d.Now(), w.d.IdleTTL)
	if len(evicted) > 0 {
		w.d.Logger.Info("evicted idle sessions", "sessions", evicted)
	}
	if err != nil {
		return err
	}
	_, err = ExpireLeases(ctx, w.d, w.d.Now())
	return err
}

// EvictIdle stops the service of every live session that has no task in
// progress and no activity for ttl (as of now). Activity is a task, a
// start, or a connection on the session's port: the connections on the
// ports are sampled first (SampleActivity), so a service in use is not
// evicted. It returns the keys evicted.
func EvictIdle(ctx context.Context, d *Deps, now time.Time, ttl time.Duration) ([]string, error) {
	if _, err := SampleActivity(ctx, d); err != nil {
		return nil, err
	}
	sessions, err := d.Store.Sessions(ctx, false)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range sessions {
		if s.State != grove.SessionLive || now.Sub(s.LastUsedAt) < ttl {
			continue
		}
		if busy, err := d.sessionBusy(ctx, s.ID); err != nil || busy {
			if err != nil {
				return out, err
			}
			continue
		}
		last := s.Activity
		if last == "" {
			last = "nothing"
		}
		msg := fmt.Sprintf("idle for %s (ttl %s; last activity: %s)", now.Sub(s.LastUsedAt).Round(time.Second), ttl, last)
		if err := d.evict(ctx, s.ID, msg); err != nil {
			return out, err
		}
		out = append(out, s.ID)
	}
	return out, nil
}

// SampleActivity reads /proc/net/tcp{,6} once and records activity on
// every live session with a connection on its port (established, or
// closed less than a minute ago): "connection on port N". It returns the
// keys touched.
func SampleActivity(ctx context.Context, d *Deps) ([]string, error) {
	sessions, err := d.Store.Sessions(ctx, false)
	if err != nil {
		return nil, err
	}
	return sampleActivity(ctx, d, sessions)
}

func sampleActivity(ctx context.Context, d *Deps, sessions []grove.Session) ([]string, error) {
	var live []grove.Session
	for _, s := range sessions {
		if s.State == grove.SessionLive && s.Port != 0 {
			live = append(live, s)
		}
	}
	if len(live) == 0 {
		return nil, nil
	}
	use, err := readPorts(0, 0) // all: a port leased under another --port-range counts too
	if err != nil {
		return nil, err
	}
	var touched []string
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		for _, s := range live {
			if u := use[s.Port]; u != nil && u.Conns > 0 {
				if err := tx.NoteActivity(ctx, s.ID, fmt.Sprintf("connection on port %d", s.Port)); err != nil {
					return err
				}
				touched = append(touched, s.ID)
			}
		}
		return nil
	})
	return touched, err
}

// ExpireLeases frees the ports of sessions whose service has been down
// (evicted, dead, failed) longer than the port lease; each remembers its
// port and asks for it again when it starts. It returns the keys.
func ExpireLeases(ctx context.Context, d *Deps, now time.Time) ([]string, error) {
	var keys []string
	err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		if keys, err = tx.ExpireLeases(ctx, now.Add(-d.portLease())); err != nil {
			return err
		}
		for _, k := range keys {
			if err := tx.AddEvent(ctx, "", k, "port_released", fmt.Sprintf("service down longer than the port lease (%s)", d.portLease())); err != nil {
				return err
			}
		}
		return nil
	})
	return keys, err
}
