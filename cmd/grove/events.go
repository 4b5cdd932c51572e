package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
)

// eventsPoll is how often `grove events --follow` looks for new events.
const eventsPoll = 100 * time.Millisecond

func (a *app) eventsCmd() *cobra.Command {
	var (
		follow, asJSON bool
		task           string
		since          int64
	)
	c := &cobra.Command{
		Use:   "events",
		Short: "Print the audit events of every task (and session), oldest first; --follow streams them",
		Long: `events prints grove's audit events in the order they happened, each with
its id. --follow keeps printing new ones until interrupted, so a script can
react to tasks instead of polling them. --json prints one JSON object per
line: {"id","task_id","session_id","at","kind","message"}. Event ids only
grow: --since ID resumes after the last event a script read.`,
		Example: `  grove events --follow --json
  grove events --follow --json --task t1a2b3c4d
  grove events --follow --json --since 1234   # resume after event 1234`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx := c.Context()
			if err := a.open(ctx); err != nil {
				return err
			}
			if since < 0 {
				return grove.Userf(grove.ErrUsage, "give an event id from an earlier line, or 0 for all", "negative --since %d", since)
			}
			id := ""
			if task != "" {
				var err error
				if id, err = a.resolve(ctx, task); err != nil {
					return err
				}
			}
			if follow {
				var stop context.CancelFunc
				ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
				defer stop()
			}
			return a.streamEvents(ctx, id, since, follow, asJSON)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events until interrupted")
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line")
	c.Flags().StringVar(&task, "task", "", "only this task's events (an id or a unique prefix)")
	c.Flags().Int64Var(&since, "since", 0, "only events after this event id (0: from the first)")
	return c
}

// streamEvents prints events after since (of task id, or all), and with
// follow keeps polling for new ones until ctx ends (an interrupt: exit 0).
func (a *app) streamEvents(ctx context.Context, id string, since int64, follow, asJSON bool) error {
	enc := json.NewEncoder(a.stdout) // one compact line per event, even on a terminal
	pt := newPainter(a.stdout)
	read, last := ctx, false
	for {
		evs, err := a.st.EventsAfter(read, since, id, 1000)
		if err != nil {
			if read.Err() != nil {
				return nil
			}
			return err
		}
		for _, e := range evs {
			if asJSON {
				err = enc.Encode(e)
			} else {
				owner := e.TaskID
				if owner == "" {
					owner = "session " + e.SessionID
				}
				_, err = fmt.Fprintf(a.stdout, "%d  %s  %s  %s  %s\n", e.ID, e.At.Format(time.RFC3339Nano),
					owner, pt.paint(colorBlue, e.Kind), oneLine(e.Message))
			}
			if err != nil {
				return err
			}
			since = e.ID
		}
		if len(evs) == 1000 {
			continue // more to read at once
		}
		if !follow || last {
			return nil
		}
		if sleepCtx(ctx, eventsPoll) != nil {
			// Interrupted: the stream ends cleanly, with every event
			// recorded before the interrupt (one last read).
			c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			read, last = c, true
		}
	}
}
