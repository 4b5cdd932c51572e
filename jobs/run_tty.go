package jobs

import (
	"context"
	"fmt"
	"strings"

	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

// EventWaitingInput is recorded when the agent of a terminal run waits for
// input (the supervisor's waiting file appeared).
const EventWaitingInput = "waiting_input"

// noteWaiting turns a new waiting episode of the run in dir into a
// waiting_input event. *seen is the last episode recorded by this worker;
// after a daemon restart (seen 0) the events are looked at first, so an
// episode is recorded once.
func (w *RunAgentWorker) noteWaiting(ctx context.Context, id, dir string, seen *int) {
	wt, ok, err := supervise.ReadWaiting(dir)
	if err != nil || !ok || wt.N == *seen {
		return
	}
	tag := fmt.Sprintf("(#%d)", wt.N)
	if *seen == 0 {
		evs, err := w.d.Store.Events(ctx, id, 0)
		if err != nil {
			return
		}
		for _, e := range evs {
			if e.Kind == EventWaitingInput && strings.HasSuffix(e.Message, tag) {
				*seen = wt.N
				return
			}
		}
	}
	msg := fmt.Sprintf("agent waits for input: terminal quiet since %s, %s %s",
		wt.Since.Format("15:04:05"), wt.How, tag)
	if err := w.d.Store.InTx(ctx, func(tx *store.Tx) error {
		return tx.AddEvent(ctx, id, "", EventWaitingInput, msg)
	}); err != nil {
		w.d.Logger.Warn("record waiting_input", "task", id, "err", err)
		return
	}
	*seen = wt.N
}
