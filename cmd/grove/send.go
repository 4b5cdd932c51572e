package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove/jobs/supervise"
)

func (a *app) sendCmd() *cobra.Command {
	var enter bool
	c := &cobra.Command{
		Use:   "send ID TEXT [--enter]",
		Short: "Type TEXT into a --tty agent's terminal",
		Long: `send types TEXT into the terminal of a task submitted with --tty, as if
someone attached had typed it; --enter presses Enter after it. It returns once
the supervisor has passed the text on. Use it to answer a prompt or give a
follow-up instruction from a script, e.g. after grove wait --until-waiting.`,
		Example: `  grove wait --until-waiting $id && grove send $id yes --enter
  grove send $id "$(printf '\003')"      # Ctrl-C`,
		Args: exactArgs(2, "a task id and the text"),
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			id, err := a.openLocalTask(ctx, args[0], "send")
			if err != nil {
				return err
			}
			conn, _, err := a.dialTerminal(ctx, id, false)
			if err != nil {
				return err
			}
			defer conn.Close()
			text := args[1]
			if enter {
				text += "\r" // what the Enter key sends; the terminal turns it into \n
			}
			if err := supervise.WriteFrame(conn, supervise.FrameInput, []byte(text)); err != nil {
				return fmt.Errorf("send to task %s: %w", id, err)
			}
			// The supervisor handles frames in order and hangs up after our
			// end: its hang-up means the text reached the terminal.
			if err := conn.CloseWrite(); err != nil {
				return fmt.Errorf("send to task %s: %w", id, err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _ = io.Copy(io.Discard, conn)
			return nil
		},
	}
	c.Flags().BoolVar(&enter, "enter", false, "press Enter after the text")
	return c
}
