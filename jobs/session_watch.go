package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// Watcher periods. A pass reads the session table and stats each live
// service's run directory (cheap); the rest is spaced out.
const (
	watchEvery    = 500 * time.Millisecond
	sampleEvery   = time.Second      // /proc/net/tcp for activity
	ownerEvery    = 2 * time.Second  // who answers each live port
	expireEvery   = 10 * time.Second // port leases
	idleKickEvery = 5 * time.Second  // an evict_idle pass when one is due
)

// WatchSessions watches session services until ctx ends (the daemon runs
// it): a service whose run ended is recorded (service_exited, exit code,
// state dead; see serviceExited) within a pass; a dead session whose
// restart is due gets a restart job; connections on live ports count as
// activity; a live port answered by a process outside its service's tree
// makes the session dead (the service is stopped); expired port leases
// are freed; and an evict_idle pass is queued as soon as a live session
// has been idle for the TTL, so a short --idle-ttl is honoured.
func WatchSessions(ctx context.Context, d *Deps, client *Client) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	var lastSample, lastOwner, lastExpire, lastKick time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sessions, err := d.Store.Sessions(ctx, false)
		if err != nil {
			d.Logger.Warn("watch sessions", "err", err)
			continue
		}
		now := time.Now()
		checkOwner := now.Sub(lastOwner) >= ownerEvery
		if checkOwner {
			lastOwner = now
		}
		for _, s := range sessions {
			switch {
			case s.State == grove.SessionLive && len(s.Serve) > 0:
				d.watchService(ctx, s, checkOwner)
			case s.State == grove.SessionDead && s.RestartAt != nil && !now.Before(*s.RestartAt):
				d.queueRestart(ctx, client, s.ID)
			}
		}
		if now.Sub(lastSample) >= sampleEvery {
			lastSample = now
			if _, err := sampleActivity(ctx, d, sessions); err != nil {
				d.Logger.Warn("sample session activity", "err", err)
			}
		}
		if now.Sub(lastExpire) >= expireEvery {
			lastExpire = now
			d.finishStops(ctx, sessions)
			if keys, err := ExpireLeases(ctx, d, d.Now()); err != nil {
				d.Logger.Warn("expire port leases", "err", err)
			} else if len(keys) > 0 {
				d.Logger.Info("port leases expired", "sessions", keys)
			}
		}
		if now.Sub(lastKick) >= idleKickEvery && idleDue(ctx, d, sessions) {
			lastKick = now
			if err := d.Store.InTx(ctx, func(tx *store.Tx) error { return d.enqueue(ctx, client, tx, EvictIdleArgs{}) }); err != nil {
				d.Logger.Warn("queue evict_idle", "err", err)
			}
		}
	}
}

// idleDue reports whether a live session has been idle past the TTL
// (re-read after sampling, so fresh activity counts).
func idleDue(ctx context.Context, d *Deps, sessions []grove.Session) bool {
	now := d.Now()
	for _, s := range sessions {
		if s.State != grove.SessionLive || now.Sub(s.LastUsedAt) < d.IdleTTL {
			continue
		}
		cur, err := d.Store.Session(ctx, s.ID)
		if err != nil || cur.State != grove.SessionLive || now.Sub(cur.LastUsedAt) < d.IdleTTL {
			continue
		}
		if busy, err := d.sessionBusy(ctx, s.ID); err == nil && !busy {
			return true
		}
	}
	return false
}

// watchService checks one live session's service: ended (recorded as
// dead), or (with checkOwner) its port answered by a process outside its
// tree (stopped, dead).
func (d *Deps) watchService(ctx context.Context, s grove.Session, checkOwner bool) {
	var (
		run grove.Run
		ws  grove.Workspace
	)
	if err := d.Store.Read(ctx, func(tx *store.Tx) error {
		var err error
		if run, err = tx.ServiceRun(ctx, s.ID); err != nil {
			return err
		}
		ws, err = tx.SessionWorkspace(ctx, s.ID)
		return err
	}); err != nil {
		return
	}
	if e, ended := runEnded(run.Dir); ended {
		res, err := d.serviceExited(ctx, s.ID, run, e, "")
		if err != nil {
			d.Logger.Warn("record service exit", "session", s.ID, "err", err)
		} else if res.State == grove.SessionDead {
			d.Logger.Warn("service exited", "session", s.ID, "code", e.Code, "reason", res.Reason)
		}
		return
	}
	if !checkOwner || s.Port == 0 {
		return
	}
	use, err := readPorts(s.Port, s.Port)
	if err != nil {
		return
	}
	u := use[s.Port]
	if u == nil || len(u.Listen) == 0 {
		return
	}
	tree := serviceTree{supPid: run.Pid, supStart: run.StartTime, key: s.ID, worktree: ws.Path}
	if tree.owns(u.Listen) {
		return
	}
	who := describePids(holders(u.Listen))
	d.portLost(ctx, s.ID, fmt.Sprintf("port %d is answered by %s, outside the service's processes; service stopped", s.Port, who))
}

// portLost makes a live session dead because its port is not its own:
// state first (so the stop is not taken for a crash), then the service's
// tree is stopped.
func (d *Deps) portLost(ctx context.Context, key, reason string) {
	unlock := lockSession(d, key)
	defer unlock()
	moved := false
	if err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		var err error
		moved, err = tx.MoveSession(ctx, key, []grove.SessionState{grove.SessionLive}, grove.SessionDead, reason)
		if err != nil || !moved {
			return err
		}
		return tx.AddEvent(ctx, "", key, "session_dead", reason)
	}); err != nil || !moved {
		return
	}
	if err := d.stopService(ctx, key); err != nil {
		d.Logger.Warn("stop service", "session", key, "err", err)
	}
}

// queueRestart inserts the restart of a dead session whose backoff is
// over (once: the due time is cleared in the same transaction).
func (d *Deps) queueRestart(ctx context.Context, client *Client, key string) {
	err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		ok, err := tx.TakeRestart(ctx, key)
		if err != nil || !ok {
			return err
		}
		if err := tx.AddEvent(ctx, "", key, "service_restart", "restarting under the session's restart policy"); err != nil {
			return err
		}
		return d.enqueue(ctx, client, tx, SessionArgs{Key: key, Op: SessionRestart})
	})
	if err != nil {
		d.Logger.Warn("queue service restart", "session", key, "err", err)
	}
}

// finishStops stops the services of evicted sessions whose run has not
// ended: an eviction interrupted (a crash) between recording the state and
// stopping the service.
func (d *Deps) finishStops(ctx context.Context, sessions []grove.Session) {
	for _, s := range sessions {
		if s.State != grove.SessionEvicted || len(s.Serve) == 0 {
			continue
		}
		var run grove.Run
		if err := d.Store.Read(ctx, func(tx *store.Tx) error {
			var err error
			run, err = tx.ServiceRun(ctx, s.ID)
			return err
		}); err != nil || run.EndedAt != nil {
			continue
		}
		unlock := lockSession(d, s.ID)
		cur, err := d.Store.Session(ctx, s.ID)
		if err == nil && cur.State == grove.SessionEvicted {
			if err := d.stopService(ctx, s.ID); err != nil {
				d.Logger.Warn("finish stopping an evicted service", "session", s.ID, "err", err)
			}
		}
		unlock()
	}
}
