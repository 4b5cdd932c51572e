package jobs

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"

	"github.com/grove-dev/grove/store"
)

// How a job reaches a worker quickly. River's SQLite driver has no LISTEN:
// an insert writes a row to an outbox table (river_notification) that the
// daemon's listener polls every 50 ms, and only then does the queue fetch.
// Two steps of a task (submit → create_worktree → run_agent) would wait for
// that poll each. So the daemon's listener is wrapped (wakingListener) to
// look at the outbox at once when woken: inside the daemon after any
// transaction that inserted a job commits (Deps.enqueue), and from a CLI
// process by a datagram to the daemon's wake socket in its home
// (PokeDaemon). The poll
// stays as the fallback: a lost wake costs at most 50 ms, never a job.

// On PostgreSQL none of this is needed: River's Postgres driver LISTENs,
// and an insert (from any process or host) NOTIFYs in its transaction, so
// the daemon's listener hears of a job as soon as it commits. There the
// wake is a no-op (cutting a pgx listener's wait short would close its
// connection).

// wakeDriver is River's driver with a listener that can be woken (SQLite).
type wakeDriver struct {
	riverdriver.Driver[*sql.Tx]
	wake chan struct{} // buffered(1): a pending wake; nil on PostgreSQL
}

// newWakeDriver wraps st's River driver; on PostgreSQL Wake does nothing.
func newWakeDriver(st *store.Store) *wakeDriver {
	d := &wakeDriver{Driver: st.RiverDriver()}
	if !st.Postgres() {
		d.wake = make(chan struct{}, 1)
	}
	return d
}

// driver is the driver to give River: the wrapper on SQLite, the plain
// driver on PostgreSQL.
func (d *wakeDriver) driver() riverdriver.Driver[*sql.Tx] {
	if d.wake == nil {
		return d.Driver
	}
	return d
}

// GetListener wraps the driver's listener (see wakingListener).
func (d *wakeDriver) GetListener(params *riverdriver.GetListenenerParams) riverdriver.Listener {
	if d.wake == nil {
		return d.Driver.GetListener(params)
	}
	return &wakingListener{Listener: d.Driver.GetListener(params), wake: d.wake}
}

// Wake makes the listener look for notifications now. Never blocks.
func (d *wakeDriver) Wake() {
	if d.wake == nil {
		return
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// wakingListener is a listener whose wait between polls ends early on a
// wake: the wait is cut short and the outbox queried again at once.
type wakingListener struct {
	riverdriver.Listener
	wake <-chan struct{}
}

// WaitForNotification returns the next notification, like the wrapped
// listener, but polls again as soon as it is woken.
func (l *wakingListener) WaitForNotification(ctx context.Context) (*riverdriver.Notification, error) {
	for {
		wctx, cancel := context.WithCancel(ctx)
		woken := make(chan struct{})
		done := make(chan struct{})
		go func() {
			select {
			case <-l.wake:
				close(woken)
				cancel()
			case <-done:
			}
		}()
		n, err := l.Listener.WaitForNotification(wctx)
		close(done)
		cancel()
		select {
		case <-woken:
			if err != nil && ctx.Err() == nil {
				continue // cut short by the wake: look again now
			}
		default:
		}
		return n, err
	}
}

// enqueue inserts a stage job in tx; once tx commits, the daemon's
// listener is woken so the job's queue fetches it at once.
func (d *Deps) enqueue(ctx context.Context, client *Client, tx *store.Tx, args river.JobArgs) error {
	if err := d.enqueueQuietly(ctx, client, tx, args); err != nil {
		return err
	}
	if d.wake != nil {
		tx.AfterCommit(d.wake)
	}
	return nil
}

// enqueueQuietly inserts a stage job in tx without waking the listener:
// the caller wakes it later (Deps.wakeQueues) or the next poll finds it.
func (d *Deps) enqueueQuietly(ctx context.Context, client *Client, tx *store.Tx, args river.JobArgs) error {
	opts, err := taskQueueOpts(ctx, d.Store, tx, args)
	if err != nil {
		return err
	}
	_, err = client.InsertTx(ctx, tx.SQL(), args, opts)
	return err
}

// wakeQueues wakes the daemon's listener now (nothing outside the daemon).
func (d *Deps) wakeQueues() {
	if d.wake != nil {
		d.wake()
	}
}

// enqueue inserts a job in tx and, once tx commits, pokes the daemon (if
// one runs) to pick it up at once.
func (i *Intents) enqueue(ctx context.Context, tx *store.Tx, args river.JobArgs) error {
	opts, err := taskQueueOpts(ctx, i.Store, tx, args)
	if err != nil {
		return err
	}
	if _, err := i.Client.InsertTx(ctx, tx.SQL(), args, opts); err != nil {
		return err
	}
	if i.wake != nil {
		tx.AfterCommit(i.wake)
	} else {
		tx.AfterCommit(func() { PokeDaemon(i.Home) })
	}
	return nil
}

// WakeSocket is the daemon's wake socket in home. It is a file in the
// home directory (mode 0700), so only its owner can connect: nobody else
// can wake the daemon, flood it or take the name. ok is false when the
// path is too long for a unix socket (about 107 bytes); then there is no
// wake socket and jobs from the CLI wait for the listener's 50 ms poll.
func WakeSocket(home string) (path string, ok bool) {
	path = filepath.Join(home, "wake.sock")
	return path, len(path) < 104
}

// PokeDaemon tells the daemon of home, if one listens, that a job was
// just committed. Best effort and non-blocking: without a daemon it does
// nothing.
func PokeDaemon(home string) {
	path, ok := WakeSocket(home)
	if home == "" || !ok {
		return
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	_, _ = c.Write([]byte{1})
}

// claimSocketPath readies path for a daemon's socket in the home: ok
// false (too long for a unix socket) is an error, and a file left there
// by a dead daemon is removed (the caller holds the daemon lock).
func claimSocketPath(path string, ok bool) (string, error) {
	if !ok {
		return "", fmt.Errorf("home path too long for a unix socket: %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	return path, nil
}

// minWakeGap spaces the wakes the socket passes on: each one costs an
// outbox query, and a burst of commits needs only one.
const minWakeGap = 2 * time.Millisecond

// ListenWake serves the wake socket of home until ctx ends, waking the
// daemon's listener on every datagram, at most once per minWakeGap. The
// caller holds the daemon lock, so a socket file left by a dead daemon is
// replaced.
func (d *Deps) ListenWake(ctx context.Context, home string) error {
	if d.wake == nil {
		return errors.New("no River client to wake")
	}
	path, err := claimSocketPath(WakeSocket(home))
	if err != nil {
		return err
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer os.Remove(path)
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	buf := make([]byte, 16)
	var last time.Time
	for {
		if _, _, err := conn.ReadFromUnix(buf); err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if gap := time.Since(last); gap < minWakeGap {
			time.Sleep(minWakeGap - gap)
		}
		last = time.Now()
		d.wake()
	}
}
