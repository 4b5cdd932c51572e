package main

import (
	"context"
	"time"

	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/store"
)

// hostSilence is how long a host's daemon may go without a heartbeat
// before doctor reports it.
const hostSilence = 6 * jobs.HeartbeatEvery

// checkAnyDatabase is checkDatabase for the database this process uses:
// the SQLite file in the home, or the PostgreSQL server of --database /
// $GROVE_DATABASE (reached, schema and River versions).
func (a *app) checkAnyDatabase(ctx context.Context, rep *doctorReport, home string) *store.Store {
	db := a.databaseURL()
	if db == "" {
		return checkDatabase(ctx, rep, home)
	}
	a.home = home
	st, err := store.OpenExistingPostgres(ctx, db, a.hostName())
	if err != nil {
		rep.add("database", checkProblem, "check the URL and that the server is up", "cannot reach %s: %v", store.Redact(db), err)
		return nil
	}
	h, err := st.Health(ctx)
	if err != nil {
		rep.add("database", checkProblem, "check the server", "%v", err)
		return st
	}
	rep.add("database", checkOK, "", "%s: reachable (PostgreSQL)", st.Path())
	switch {
	case h.SchemaVersion > h.SchemaWant || h.RiverVersion > h.RiverWant:
		rep.add("schema", checkProblem, "upgrade grove on this host",
			"grove schema %d, River migrations %d: newer than this grove's %d and %d", h.SchemaVersion, h.RiverVersion, h.SchemaWant, h.RiverWant)
	case h.SchemaVersion < h.SchemaWant || h.RiverVersion < h.RiverWant:
		rep.add("schema", checkProblem, "run grove serve once: it migrates",
			"grove schema %d, River migrations %d; this grove wants %d and %d", h.SchemaVersion, h.RiverVersion, h.SchemaWant, h.RiverWant)
	default:
		rep.add("schema", checkOK, "", "grove schema %d, River migrations %d (current)", h.SchemaVersion, h.RiverVersion)
	}
	// The other checks look at this host's repositories and sessions.
	return st.HostScoped()
}

// checkHosts lists the daemon hosts of a shared database and reports
// those not heard from for hostSilence: their tasks wait for them.
func checkHosts(ctx context.Context, rep *doctorReport, st *store.Store) {
	if st == nil || !st.Postgres() {
		return
	}
	hosts, err := st.Hosts(ctx)
	if err != nil {
		rep.add("hosts", checkProblem, "check the database", "%v", err)
		return
	}
	now := time.Now()
	for _, h := range hosts {
		if quiet := now.Sub(h.SeenAt); quiet > hostSilence {
			rep.add("hosts", checkProblem, "start grove serve on "+h.Name+", or move its queued tasks: grove reassign --from "+h.Name+" --to HOST",
				"host %s not seen for %s (last daemon pid %d)", h.Name, quiet.Round(time.Second), h.Pid)
		} else {
			rep.add("hosts", checkOK, "", "host %s seen %s ago", h.Name, quiet.Round(time.Second))
		}
	}
}
