package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver"
	"github.com/riverqueue/river/riverdriver/riversqlite"

	"github.com/grove-dev/grove/store"
)

// How a job reaches a worker quickly. River's SQLite driver has no LISTEN:
// an insert writes a row to an outbox table (river_notification) that the
// daemon's listener polls every 50 ms, and only then does the queue fetch.
// Two steps of a task (submit → create_worktree → run_agent) would wait for
// that poll each. So the daemon's listener is wrapped (wakingListener) to
// look at the outbox at once when woken: inside the daemon after any
// transaction that inserted a job commits (Deps.enqueue), and from a CLI
// process by a datagram to the daemon's wake socket (PokeDaemon). The poll
// stays as the fallback: a lost wake costs at most 50 ms, never a job.

// wakeDriver is River's SQLite driver with a listener that can be woken.
type wakeDriver struct {
	*riversqlite.Driver
	wake chan struct{} // buffered(1): a pending wake
}

// GetListener wraps the driver's listener (see wakingListener).
func (d *wakeDriver) GetListener(params *riverdriver.GetListenenerParams) riverdriver.Listener {
	return &wakingListener{Listener: d.Driver.GetListener(params), wake: d.wake}
}

// Wake makes the listener look for notifications now. Never blocks.
func (d *wakeDriver) Wake() {
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
	if _, err := client.InsertTx(ctx, tx.SQL(), args, nil); err != nil {
		return err
	}
	if d.wake != nil {
		tx.AfterCommit(d.wake)
	}
	return nil
}

// enqueue inserts a job in tx and, once tx commits, pokes the daemon (if
// one runs) to pick it up at once.
func (i *Intents) enqueue(ctx context.Context, tx *store.Tx, args river.JobArgs) error {
	if _, err := i.Client.InsertTx(ctx, tx.SQL(), args, nil); err != nil {
		return err
	}
	tx.AfterCommit(func() { PokeDaemon(i.Home) })
	return nil
}

// wakeAddr is the daemon's wake socket for home: an abstract unix socket
// (no file to leave behind, no path length limit) named after the home.
func wakeAddr(home string) *net.UnixAddr {
	if abs, err := filepath.Abs(home); err == nil {
		home = abs
	}
	if real, err := filepath.EvalSymlinks(home); err == nil {
		home = real
	}
	sum := sha256.Sum256([]byte(home))
	return &net.UnixAddr{Name: "@grove-wake-" + hex.EncodeToString(sum[:12]), Net: "unixgram"}
}

// PokeDaemon tells the daemon of home, if one listens, that a job was
// just committed. Best effort and non-blocking: without a daemon it does
// nothing.
func PokeDaemon(home string) {
	if home == "" {
		return
	}
	c, err := net.DialUnix("unixgram", nil, wakeAddr(home))
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	_, _ = c.Write([]byte{1})
}

// ListenWake serves the wake socket of home until ctx ends, waking the
// daemon's listener on every datagram (wakes coalesce: a flood costs one
// outbox query per poll at most).
func (d *Deps) ListenWake(ctx context.Context, home string, logger *slog.Logger) error {
	if d.wake == nil {
		return errors.New("no River client to wake")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	conn, err := net.ListenUnixgram("unixgram", wakeAddr(home))
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	buf := make([]byte, 16)
	for {
		if _, _, err := conn.ReadFromUnix(buf); err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			logger.Warn("wake socket", "err", err)
			return err
		}
		d.wake()
	}
}
