package store

import (
	"context"
	"errors"
	"testing"

	"github.com/matryer/is"
)

// Committed's channel closes at this store's next commit, not before and
// not for a transaction that was rolled back; copies of the store share it.
func TestCommittedSignalsThisProcessCommits(t *testing.T) {
	eachDB(t, func(t *testing.T, st *Store) {
		is := is.New(t)
		ctx := context.Background()
		closed := func(c <-chan struct{}) bool {
			select {
			case <-c:
				return true
			default:
				return false
			}
		}
		c := st.Committed()
		is.True(c != nil)
		is.True(!closed(c))
		err := st.InTx(ctx, func(tx *Tx) error { return errors.New("rolled back") })
		is.True(err != nil)
		is.True(!closed(c)) // nothing committed
		is.NoErr(st.InTx(ctx, func(tx *Tx) error { return nil }))
		is.True(closed(c))
		next := st.Committed()
		is.True(!closed(next)) // a fresh one for the next commit
		scoped := st.HostScoped()
		is.NoErr(scoped.InTx(ctx, func(tx *Tx) error { return nil }))
		is.True(closed(next)) // a copy's commit is this store's too
	})
}
