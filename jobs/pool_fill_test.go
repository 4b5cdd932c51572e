package jobs

import (
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/riverqueue/river"

	"github.com/grove-dev/grove/store"
)

// TestFillRequestsOfABurstMakeOnePass: the pool passes that claims and
// applies ask for are queued fillDelay after the first request (not in
// the requesting transaction, where the pass would run beside the
// claimed task's start), and a burst of requests makes one pass.
func TestFillRequestsOfABurstMakeOnePass(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	e.d.Warm = 2
	client, err := NewInsertClient(e.st)
	is.NoErr(err)
	passes := func() int {
		res, err := client.JobList(e.ctx, river.NewJobListParams().Kinds(PoolFillArgs{}.Kind()))
		is.NoErr(err)
		return len(res.Jobs)
	}
	asked := time.Now()
	for range 5 {
		is.NoErr(e.st.InTx(e.ctx, func(tx *store.Tx) error {
			return e.d.requestFill(client, tx, e.row.ID, "tip")
		}))
	}
	deadline := time.Now().Add(10 * time.Second)
	for passes() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	is.True(time.Since(asked) >= fillDelay) // not before the delay
	is.True(!e.d.fillState(e.row.ID).coming.Load())
	is.Equal(passes(), 1) // one pass for the burst

	e.d.Warm = 0 // without a pool, nothing is asked
	is.NoErr(e.st.InTx(e.ctx, func(tx *store.Tx) error {
		return e.d.requestFill(client, tx, e.row.ID, "tip")
	}))
	is.True(!e.d.fillState(e.row.ID).coming.Load())
}
