package jobs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/riverqueue/river/riverdriver"
)

// blockingListener stands in for River's SQLite listener between polls:
// each wait blocks until its context ends, then reports a notification on
// the call numbered deliverOn.
type blockingListener struct {
	riverdriver.Listener
	calls     atomic.Int32
	deliverOn int32
}

func (l *blockingListener) WaitForNotification(ctx context.Context) (*riverdriver.Notification, error) {
	if l.calls.Add(1) >= l.deliverOn {
		return &riverdriver.Notification{Topic: "river_insert", Payload: "{}"}, nil
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// A wake cuts the listener's wait short and it looks again at once; the
// caller's own cancellation still ends the wait.
func TestWakingListener(t *testing.T) {
	is := is.New(t)
	wake := make(chan struct{}, 1)
	inner := &blockingListener{deliverOn: 2}
	l := &wakingListener{Listener: inner, wake: wake}
	wake <- struct{}{} // a commit happened
	n, err := l.WaitForNotification(context.Background())
	is.NoErr(err)
	is.Equal(n.Topic, "river_insert")
	is.Equal(inner.calls.Load(), int32(2)) // cut short once, then found it

	inner = &blockingListener{deliverOn: 99}
	l = &wakingListener{Listener: inner, wake: wake}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = l.WaitForNotification(ctx)
	is.True(errors.Is(err, context.Canceled))
	is.Equal(inner.calls.Load(), int32(1))
}

// A CLI's poke reaches the daemon's wake socket (a file in the home, so
// another home's daemon is not woken).
func TestPokeWakesTheDaemonOfItsHome(t *testing.T) {
	is := is.New(t)
	home, other := filepath.Join(t.TempDir(), "home"), filepath.Join(t.TempDir(), "other")
	is.NoErr(os.MkdirAll(home, 0o700))
	is.NoErr(os.MkdirAll(other, 0o700))
	var woken atomic.Int32
	d := &Deps{wake: func() { woken.Add(1) }}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan error, 1)
	go func() { listening <- d.ListenWake(ctx, home) }()
	sock, _ := WakeSocket(home)
	waitForSocket(t, sock) // until the listener is up
	deadline := time.Now().Add(10 * time.Second)
	// Another home's pokes go elsewhere: after three of them and one of
	// this home's, this daemon was woken exactly once.
	for range 3 {
		PokeDaemon(other)
	}
	PokeDaemon(home)
	for woken.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	is.Equal(woken.Load(), int32(1))
	cancel()
	is.NoErr(<-listening)
	_, err := os.Stat(filepath.Join(home, "wake.sock"))
	is.True(os.IsNotExist(err)) // the socket file goes with the listener
	PokeDaemon(home)            // nobody listens: a no-op, no error, no block
}
