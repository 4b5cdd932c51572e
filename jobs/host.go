package jobs

import (
	"context"
	"reflect"
	"strings"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/grove-dev/grove/store"
)

// Hosts. On PostgreSQL several daemons, each on its own host, share one
// queue; a worktree lives on one host's disk, so every job that touches a
// task's worktree (create, setup, agent, diff, apply, close) goes to a
// queue of the task's host, `<queue>_<host>`, that only that host's
// daemon works. Jobs bound to no task (pool refills, session operations)
// go to the inserting process's host. The maintenance queue stays shared:
// River's leader inserts the periodic jobs and any daemon may work one,
// each on its own host's worktrees only (store.HostScoped). On SQLite,
// one box, queues keep their plain names.

// hostBound are the queues that have one instance per host on PostgreSQL.
var hostBound = map[string]bool{QueueGit: true, QueueAgent: true, QueueCleanup: true}

// HostQueue is the name of queue base on host: base and the host name
// folded to what River allows in a queue name (lower-case letters and
// digits separated by '-' or '_', at most 64 characters).
func HostQueue(base, host string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(host) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(r)
			dash = false
		} else {
			dash = true
		}
	}
	h := b.String()
	if h == "" {
		h = "none"
	}
	if max := 64 - len(base) - 1; len(h) > max {
		h = strings.TrimRight(h[:max], "-")
	}
	return base + "_" + h
}

// hostRouter is an insert middleware (PostgreSQL only) that sends a job
// still on a plain host-bound queue to that queue of this host.
type hostRouter struct {
	river.JobInsertMiddlewareDefaults
	host string
}

func (r *hostRouter) InsertMany(ctx context.Context, many []*rivertype.JobInsertParams,
	doInner func(context.Context) ([]*rivertype.JobInsertResult, error)) ([]*rivertype.JobInsertResult, error) {
	for _, p := range many {
		if hostBound[p.Queue] {
			p.Queue = HostQueue(p.Queue, r.host)
		}
	}
	return doInner(ctx)
}

// middleware is the River middleware of a client on st.
func middleware(st *store.Store) []rivertype.Middleware {
	if !st.Postgres() {
		return nil
	}
	return []rivertype.Middleware{&hostRouter{host: st.Host()}}
}

// taskQueueOpts returns the insert options that send args, a job of a
// task (an args struct with a TaskID field), to its queue on the task's
// host; nil on SQLite and for a job bound to no task.
func taskQueueOpts(ctx context.Context, st *store.Store, tx *store.Tx, args river.JobArgs) (*river.InsertOpts, error) {
	if !st.Postgres() {
		return nil, nil
	}
	v := reflect.ValueOf(args)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil, nil
	}
	f := v.FieldByName("TaskID")
	if !f.IsValid() || f.Kind() != reflect.String || f.String() == "" {
		return nil, nil
	}
	base := ""
	if wo, ok := args.(river.JobArgsWithInsertOpts); ok {
		base = wo.InsertOpts().Queue
	}
	if !hostBound[base] {
		return nil, nil
	}
	host, err := tx.TaskHost(ctx, f.String())
	if err != nil {
		return nil, err
	}
	return &river.InsertOpts{Queue: HostQueue(base, host)}, nil
}

// Reassign moves the queued, not yet started tasks of host from to host
// to, each to the repository at the same path there, with its first job
// (store.Reassign). The moved job waits for to's next fetch poll (about
// a second): moving a row sends no insert notification.
func Reassign(ctx context.Context, st *store.Store, from, to string) ([]store.Reassigned, error) {
	return st.Reassign(ctx, from, to, CreateWorktreeArgs{}.Kind(), HostQueue(QueueGit, from), HostQueue(QueueGit, to))
}
