package jobs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/store"
)

// Hosts. On PostgreSQL several daemons, each on its own host, share one
// queue; a worktree lives on one host's disk, so every job that touches a
// task's worktree (create, setup, agent, diff, apply, close) goes to a
// queue of the task's host, `<queue>_<host>`, that only that host's
// daemon works. Jobs bound to no task (pool refills, session operations)
// go to the inserting process's host, maintenance included: on
// PostgreSQL each daemon schedules its own periodic jobs
// (scheduler.RunLocal, not River's leader-only periodic jobs) into its
// host's maintenance queue, and its reaper, evictor and LRU cap walk only
// its host's worktrees (store.HostScoped). A unique job is unique per
// host. On SQLite, one box, queues keep their plain names.

// hostBound are the queues that have one instance per host on PostgreSQL.
var hostBound = map[string]bool{QueueGit: true, QueueAgent: true, QueueCleanup: true, QueueMaintenance: true, QueueBackup: true}

// HostQueue is the name of queue base on host: base and the host name
// folded to what River allows in a queue name (lower-case letters and
// digits separated by '-' or '_', at most 64 characters). A name that
// folding changes (web.1, Web-1) or cuts gets a hash of the exact name
// appended, so distinct hosts never share a queue.
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
	if max := 64 - len(base) - 1; h != host || len(h) > max {
		sum := fnv.New32a()
		sum.Write([]byte(host))
		tag := fmt.Sprintf("%08x", sum.Sum32())
		if cut := max - len(tag) - 1; len(h) > cut {
			h = strings.TrimRight(h[:cut], "-")
		}
		if h == "" {
			h = tag
		} else {
			h += "-" + tag
		}
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
			if p.UniqueKey != nil { // unique per host: one host's pass never hides another's
				p.UniqueKey = append(append([]byte(nil), p.UniqueKey...), "@"+r.host...)
			}
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
// (store.Reassign), and wakes to's git queue (an insert notification, as
// River's own insert sends) so it fetches them at once.
func Reassign(ctx context.Context, st *store.Store, from, to string) ([]store.Reassigned, error) {
	return st.Reassign(ctx, from, to, CreateWorktreeArgs{}.Kind(), HostQueue(QueueGit, from), HostQueue(QueueGit, to))
}

// submitRemote records a task on another host's repository (req.Host,
// req.RepoDir its absolute path there), which this box cannot read: the
// base is resolved by that host's create_worktree (resolveRemoteBase), as
// a local submit would resolve it, from req.Base or the main checkout's
// branch there.
func (i *Intents) submitRemote(ctx context.Context, req SubmitRequest) (task grove.Task, created bool, err error) {
	if !i.Store.Postgres() {
		return task, false, grove.Userf(grove.ErrUsage, "--host needs hosts sharing a PostgreSQL database (--database)",
			"no host %q on SQLite", req.Host)
	}
	if !filepath.IsAbs(req.RepoDir) {
		return task, false, grove.Userf(grove.ErrUsage, "name the repository by its absolute path on "+req.Host+", e.g. --repo /src/app",
			"--repo %q with --host must be an absolute path", req.RepoDir)
	}
	repo, err := i.Store.RepoOnHost(ctx, req.Host, filepath.Clean(req.RepoDir))
	if errors.Is(err, grove.ErrNotFound) {
		return task, false, grove.Userf(grove.ErrBadRequest, "run a grove command in it on "+req.Host+" first (e.g. grove submit there), or check grove ls --host "+req.Host,
			"host %s has no repository %s", req.Host, req.RepoDir)
	}
	if err != nil {
		return task, false, err
	}
	task = grove.Task{ID: grove.NewTaskID(), RepoID: repo.ID, RepoPath: repo.Path, BaseRef: req.Base,
		Argv: req.Argv, Env: req.Env, Path: req.Path, Timeout: req.Timeout, Options: req.Options,
		Apply: req.Apply, IdemKey: req.Key, State: grove.StateQueued}
	err = i.Store.InTx(ctx, func(tx *store.Tx) error {
		task, created, err = tx.InsertTask(ctx, task)
		if err != nil || !created {
			return err
		}
		msg := fmt.Sprintf("on host %s; base %s resolved there", req.Host, orDefault(req.Base, "(its main checkout's branch)"))
		if err := tx.AddEvent(ctx, task.ID, "", "submitted", msg); err != nil {
			return err
		}
		return i.enqueue(ctx, tx, CreateWorktreeArgs{TaskID: task.ID, Attempt: 1})
	})
	return task, created, err
}

func orDefault(s, dflt string) string {
	if s == "" {
		return dflt
	}
	return s
}

// resolveRemoteBase resolves, on the task's host, the base of a task
// submitted from another host (submitRemote left its base commit empty)
// and records it; it returns the task with it. Other tasks pass through.
func (d *Deps) resolveRemoteBase(ctx context.Context, task grove.Task) (grove.Task, error) {
	if task.BaseCommit != "" {
		return task, nil
	}
	repo, err := d.Repo(ctx, task.RepoPath)
	if err != nil {
		return task, err
	}
	name, commit, target, err := resolveBase(ctx, repo, gitops.MainHead{}, task.BaseRef)
	if err != nil {
		return task, err
	}
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetTaskResolvedBase(ctx, task.ID, name, commit, target); err != nil {
			return err
		}
		return tx.AddEvent(ctx, task.ID, "", "resolved", fmt.Sprintf("base %s (%.12s), target %s", name, commit, target))
	})
	if err != nil {
		return task, err
	}
	task.BaseRef, task.BaseCommit, task.TargetBranch = name, commit, target
	return task, nil
}
