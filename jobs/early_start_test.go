package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/matryer/is"
)

// Early starts and run_agent workers share the --max-agents slots: an
// early start holds one until its run_agent takes it over, a worker finds
// none free while early starts hold them all, and a dropped reservation
// frees its slot. run_agent waits for an early start that is not over.
func TestEarlyStartsHoldAgentSlots(t *testing.T) {
	is := is.New(t)
	d := &Deps{maxAgents: 2}
	is.True(d.reserveEarlyStart("t1"))
	is.True(!d.reserveEarlyStart("t1")) // one per task
	is.True(d.reserveEarlyStart("t2"))
	is.True(!d.reserveEarlyStart("t3")) // both slots held
	is.True(!d.takeAgentSlot())         // a cold run_agent waits

	d.dropEarlyStart("t2") // its hand-off failed: the slot is free again
	is.True(d.takeAgentSlot())
	d.releaseAgentSlot()

	// run_agent of t1 waits until the early start is over, then holds its
	// slot (no new one) and gives it back at its end.
	got := make(chan *earlyStart, 1)
	go func() {
		e, err := d.takeEarlyStart(context.Background(), "t1")
		is.NoErr(err)
		got <- e
	}()
	select {
	case <-got:
		t.Fatal("run_agent did not wait for the early start")
	case <-time.After(50 * time.Millisecond):
	}
	d.mu.Lock()
	close(d.early["t1"].over)
	d.mu.Unlock()
	e := <-got
	is.True(e != nil)
	is.Equal(d.agentSlots, 1) // taken over, not taken twice
	d.releaseAgentSlot()
	is.Equal(d.agentSlots, 0)
	e, err := d.takeEarlyStart(context.Background(), "t1") // a second job of the task: none
	is.NoErr(err)
	is.True(e == nil)

	// Outside the daemon (no --max-agents) there are no early starts and
	// no limit here (River's queue is the only one).
	free := &Deps{}
	is.True(!free.reserveEarlyStart("t1"))
	is.True(free.takeAgentSlot())
}
