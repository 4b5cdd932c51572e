package jobs

import (
	"errors"
	"testing"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// A retry waits while a close is removing the task's worktree (the close
// judged it safe and is deleting it); once the close has let go, it works.
func TestRetryWaitsForARemovingClose(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, _ := e.task(grove.StateFailed)
	ws, err := e.st.TaskWorkspace(e.ctx, id)
	is.NoErr(err)
	client, err := NewInsertClient(e.st)
	is.NoErr(err)
	intents := &Intents{Store: e.st, Client: client, Home: e.d.Home}

	swap := func(from, to string) bool {
		var ok bool
		is.NoErr(e.st.InTx(e.ctx, func(tx *store.Tx) (err error) {
			ok, err = tx.SwapWorkspaceState(e.ctx, ws.ID, from, to)
			return err
		}))
		return ok
	}
	is.True(swap(grove.WorkspaceReady, grove.WorkspaceRemoving))
	is.True(!swap(grove.WorkspaceReady, grove.WorkspaceRemoving)) // compare-and-swap
	err = intents.Retry(e.ctx, id)
	is.True(errors.Is(err, grove.ErrConflict))
	is.Equal(e.task0(id).State, grove.StateFailed)

	is.True(swap(grove.WorkspaceRemoving, grove.WorkspaceReady)) // the close gave up
	is.NoErr(intents.Retry(e.ctx, id))
	is.Equal(e.task0(id).State, grove.StateQueued)
}

func (e *reapEnv) task0(id string) grove.Task {
	e.t.Helper()
	task, err := e.st.Task(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return task
}
