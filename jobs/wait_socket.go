package jobs

import (
	"context"
	"encoding/json"
	"net"
	"time"

	"github.com/grove-dev/grove"
)

// Waiting through the daemon. `grove wait` (and `submit --wait`) on a
// SQLite home re-reads its tasks after every commit to the database; on a
// busy daemon that is dozens of reads a second, each paying for a fresh
// view of the file (~100 ms of CPU over a two-second task). When the home's
// daemon listens, the CLI asks it instead, on the submit socket: the daemon
// reads the tasks on its warm connection after each of its own commits
// (and every second, for other processes' writes) and answers once every
// one of them is over (grove.Task.WaitOver). The CLI then reads
// them itself, as before: the answer only tells it when to look.
//
// Nothing depends on it: without a daemon, when the daemon declines (the
// same peers as a submit: another user, a confined process; an older
// daemon that does not know the request), or when the connection breaks,
// the CLI waits by reading the database as before. The daemon stops
// waiting when the CLI hangs up.

// serveWait answers a wait request for ids on conn: Over once every task
// is over; an empty reply when the peer hung up or the daemon stops.
func (d *Deps) serveWait(ctx context.Context, conn *net.UnixConn, ids []string) (reply submitReply) {
	if len(ids) == 0 {
		return submitReply{Declined: "no task to wait for"}
	}
	for _, id := range ids {
		if !grove.ValidTaskID(id) {
			return submitReply{Declined: "not a task id: " + id}
		}
	}
	_ = conn.SetDeadline(time.Time{}) // a wait lasts as long as its tasks
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the peer sends nothing more: a read ends when it hangs up
		var b [1]byte
		_, _ = conn.Read(b[:])
		cancel()
	}()
	for {
		// Every change to a task is a commit of the store's; the daemon
		// makes nearly all of them, the rest (a CLI's) are seen within a
		// second. Watching the database file instead woke every wait on
		// every write of anyone's.
		changed := d.Store.Committed()
		over := true
		for _, id := range ids {
			t, err := d.Store.Task(ctx, id)
			if err != nil {
				if ctx.Err() != nil {
					return submitReply{}
				}
				return submitReply{Err: toWire(err)}
			}
			if !t.WaitOver() {
				over = false
				break
			}
		}
		if over {
			return submitReply{Over: true}
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return submitReply{}
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// DaemonWait is a wait the home's daemon does for a CLI (see above).
type DaemonWait struct {
	conn   net.Conn
	answer chan submitReply // the daemon's one answer
}

// WaitThroughDaemon asks the daemon of home to tell when every task of ids
// (full ids) is over. It returns nil when no daemon listens; the caller
// then waits by reading the database. Close the DaemonWait when done.
func WaitThroughDaemon(ctx context.Context, home string, ids []string) *DaemonWait {
	path, ok := SubmitSocket(home)
	if home == "" || !ok || len(ids) == 0 {
		return nil
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil // no daemon (or a dead one's socket file)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(submitReplyWait))
	if err := json.NewEncoder(conn).Encode(submitWire{Wait: ids}); err != nil {
		conn.Close()
		return nil
	}
	w := &DaemonWait{conn: conn, answer: make(chan submitReply, 1)}
	go func() {
		var r submitReply
		if err := json.NewDecoder(conn).Decode(&r); err != nil {
			r = submitReply{Declined: "connection lost: " + err.Error()}
		}
		w.answer <- r
	}()
	return w
}

// Next waits up to max for the daemon's answer. over: the daemon saw every
// task over (read them to know how they ended). gone: no answer will come
// (declined, an error, the connection lost, a nil w): wait without the
// daemon. Neither: max passed, or ctx ended.
func (w *DaemonWait) Next(ctx context.Context, max time.Duration) (over, gone bool) {
	if w == nil {
		return false, true
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case r := <-w.answer:
		return r.Over, !r.Over
	case <-t.C:
	case <-ctx.Done():
	}
	return false, false
}

// Close hangs up (the daemon stops waiting). Safe on nil.
func (w *DaemonWait) Close() {
	if w != nil {
		w.conn.Close()
	}
}
