package jobs

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// A wait handed to the daemon is answered once every task is over, not
// before; a task in review that its auto apply will take on is not over;
// a bad id is declined; without a daemon there is nothing to ask.
func TestWaitThroughTheDaemon(t *testing.T) {
	is := is.New(t)
	if b, _ := os.ReadFile("/proc/self/status"); strings.Contains(string(b), "NoNewPrivs:\t1") {
		t.Skip("the tests run with no_new_privs: the daemon declines such peers by design")
	}
	e := newReapEnv(t)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	client, err := NewInsertClient(e.st)
	is.NoErr(err)
	e.d.wake = func() {}
	home := e.d.Home
	go func() { _ = e.d.ListenSubmit(ctx, home, client) }()
	sock, _ := SubmitSocket(home)
	waitForSocket(t, sock)
	intents := &Intents{Store: e.st, Client: client, Home: home}
	submit := func(apply grove.ApplyPolicy) string {
		task, _, err := intents.Submit(ctx, SubmitRequest{RepoDir: e.repo.Root, Argv: []string{"true"}, Apply: apply, ID: grove.NewTaskID()})
		is.NoErr(err)
		return task.ID
	}
	// move walks id through the pipeline's states to each of path.
	move := func(id string, code int, path ...grove.TaskState) {
		is.NoErr(e.st.InTx(ctx, func(tx *store.Tx) error {
			if code >= 0 {
				if err := tx.SetExitCode(ctx, id, code); err != nil {
					return err
				}
			}
			for _, to := range path {
				if _, err := tx.SetState(ctx, id, nil, to, ""); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	a, b := submit(grove.ApplyManual), submit(grove.ApplyAuto)

	w := WaitThroughDaemon(ctx, home, []string{a, b})
	is.True(w != nil)
	defer w.Close()
	over, gone := w.Next(ctx, 200*time.Millisecond)
	is.True(!over && !gone) // both queued
	move(a, 0, grove.StatePreparing, grove.StateRunning, grove.StateDiffing, grove.StateReview)
	over, gone = w.Next(ctx, 200*time.Millisecond)
	is.True(!over && !gone) // b is not over yet
	move(b, 0, grove.StatePreparing, grove.StateRunning, grove.StateDiffing, grove.StateReview)
	over, gone = w.Next(ctx, 200*time.Millisecond)
	is.True(!over && !gone) // b's auto apply is on its way
	began := time.Now()
	move(b, -1, grove.StateApplying, grove.StateApplied)
	over, gone = w.Next(ctx, 5*time.Second)
	is.True(over && !gone)
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("the daemon answered %s after the last task was over: it did not watch the commits", d)
	}

	bad := WaitThroughDaemon(ctx, home, []string{"../x"})
	defer bad.Close()
	over, gone = bad.Next(ctx, 5*time.Second)
	is.True(!over && gone) // declined: the CLI waits by itself

	is.True(WaitThroughDaemon(ctx, t.TempDir(), []string{a}) == nil) // no daemon
	over, gone = (*DaemonWait)(nil).Next(ctx, time.Millisecond)
	is.True(!over && gone)
}
