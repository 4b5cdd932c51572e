package main

import (
	"context"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

// checkSessions lists sessions whose service is not what they should be:
// dead or failed (with the reason), and live ones whose service's
// supervisor is gone (no daemon watched it end).
func checkSessions(ctx context.Context, rep *doctorReport, st *store.Store) {
	if st == nil {
		return
	}
	ss, err := st.Sessions(ctx, false)
	if err != nil {
		rep.add("sessions", checkInfo, "", "sessions not checked: %v", err)
		return
	}
	bad := 0
	for _, s := range ss {
		hint := "grove session show " + s.ID + "; then grove session resume " + s.ID + ", or grove session close " + s.ID
		switch s.State {
		case grove.SessionDead, grove.SessionFailed:
			bad++
			rep.add("sessions", checkProblem, hint, "session %s is %s: %s", s.ID, s.State, s.Reason)
		case grove.SessionLive:
			if len(s.Serve) == 0 {
				continue
			}
			var run grove.Run
			if err := st.Read(ctx, func(tx *store.Tx) error {
				var err error
				run, err = tx.ServiceRun(ctx, s.ID)
				return err
			}); err == nil && !supervise.Alive(run.Dir) {
				bad++
				rep.add("sessions", checkProblem, "start grove serve: it records the exit; "+hint,
					"session %s is recorded live but its service (run %s) is gone", s.ID, run.Dir)
			}
		}
	}
	if bad == 0 {
		rep.add("sessions", checkOK, "", "%d open, none dead or failed", len(ss))
	}
}
