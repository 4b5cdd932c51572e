package jobs

import (
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// refs/grove/tasks/* of finished tasks whose worktree is gone go after
// KeepRefs (issue 15); a task waiting on a person, a task this home does
// not know, or KeepRefs 0 keep theirs.
func TestTaskRefsRetention(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	applied, _ := e.task(grove.StateApplied)
	discarded, _ := e.task(grove.StateDiscarded)
	review, _ := e.task(grove.StateReview)
	e.reap(2*time.Hour, false) // the finished ones' worktrees removed
	is.Equal(e.workspace(applied).State, grove.WorkspaceRemoved)
	head := strings.TrimSpace(gitT(t, e.repo.Root, "rev-parse", "HEAD"))
	stranger := "refs/grove/tasks/tffffffff" // not this home's
	for _, ref := range []string{TaskRef(applied), TaskRef(discarded), TaskRef(review), stranger} {
		is.NoErr(e.repo.SetRef(e.ctx, ref, head))
	}
	refs := func() map[string]string {
		r, err := e.repo.RefsUnder(e.ctx, "refs/grove/tasks/")
		is.NoErr(err)
		return r
	}
	is.Equal(len(refs()), 4)

	e.d.KeepRefs = 0 // forever
	pruned, err := PruneTaskRefs(e.ctx, e.d, e.base.Add(1000*24*time.Hour), false)
	is.NoErr(err)
	is.Equal(len(pruned), 0)

	e.d.KeepRefs = DefaultKeepRefs
	pruned, err = PruneTaskRefs(e.ctx, e.d, e.base.Add(29*24*time.Hour), false)
	is.NoErr(err)
	is.Equal(len(pruned), 0) // not old enough

	pruned, err = PruneTaskRefs(e.ctx, e.d, e.base.Add(31*24*time.Hour), true)
	is.NoErr(err)
	is.Equal(len(pruned), 2)
	is.Equal(len(refs()), 4) // a dry run changes nothing

	pruned, err = PruneTaskRefs(e.ctx, e.d, e.base.Add(31*24*time.Hour), false)
	is.NoErr(err)
	is.Equal(len(pruned), 2)
	left := refs()
	is.Equal(len(left), 2)
	is.True(left[TaskRef(review)] != "" && left[stranger] != "")
	is.Equal(e.events(applied, "ref_pruned"), 1)
	is.Equal(e.events(discarded, "ref_pruned"), 1)
}
