package jobs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// waitForSocket waits until path exists (a listener is up).
func waitForSocket(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no socket at %s", path)
}

// A submit handed to the daemon is recorded as a local one would be, under
// the id the submitter chose, with create_worktree queued and the daemon's
// queue woken; its errors keep their kind and hint; a request from
// another git environment is declined and records nothing; without a
// daemon nothing is handled.
func TestSubmitThroughTheDaemon(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	client, err := NewInsertClient(e.st)
	is.NoErr(err)
	var woken atomic.Int32
	e.d.wake = func() { woken.Add(1) }
	home := e.d.Home
	listening := make(chan error, 1)
	go func() { listening <- e.d.ListenSubmit(ctx, home, client) }()
	sock, _ := SubmitSocket(home)
	waitForSocket(t, sock)

	req := SubmitRequest{RepoDir: e.repo.Root, Argv: []string{"agent", "--prompt", "a b"}, Env: map[string]string{"K": "v"},
		Timeout: time.Minute, Apply: grove.ApplyAuto, ID: grove.NewTaskID()}
	id, handled, err := SubmitViaDaemon(ctx, home, req)
	is.NoErr(err)
	is.True(handled)
	is.Equal(id, req.ID)
	task, err := e.st.Task(ctx, id)
	is.NoErr(err)
	is.Equal(task.Argv, req.Argv)
	is.Equal(task.Env, req.Env)
	is.Equal(task.Apply, grove.ApplyAuto)
	is.Equal(task.State, grove.StateQueued)
	is.Equal(task.RepoPath, e.repo.Root)
	var jobs int
	is.NoErr(e.st.DB().QueryRowContext(ctx, `SELECT COUNT(*) FROM river_job WHERE kind = 'create_worktree'
		AND json_extract(args, '$.task_id') = ?`, id).Scan(&jobs))
	is.Equal(jobs, 1)
	is.Equal(woken.Load(), int32(1)) // the daemon's own queue, no datagram

	// An error crosses with its kind (the exit code) and its hint.
	bad := req
	bad.ID, bad.RepoDir = grove.NewTaskID(), filepath.Join(t.TempDir(), "missing")
	_, handled, err = SubmitViaDaemon(ctx, home, bad)
	is.True(handled)
	is.True(errors.Is(err, grove.ErrBadRequest))
	is.True(grove.HintOf(err) != "")
	_, err = e.st.Task(ctx, bad.ID)
	is.True(errors.Is(err, grove.ErrNotFound))

	// Another git environment (GIT_DIR, HOME, …) is resolved locally.
	t.Setenv("GIT_DIR", filepath.Join(e.repo.Root, ".git"))
	other := req
	other.ID = grove.NewTaskID()
	_, handled, err = SubmitViaDaemon(ctx, home, other)
	is.NoErr(err)
	is.True(!handled)
	_, err = e.st.Task(ctx, other.ID)
	is.True(errors.Is(err, grove.ErrNotFound))
	is.NoErr(os.Unsetenv("GIT_DIR"))

	// No id: not handed over (a lost answer could not be retried safely).
	noID := req
	noID.ID = ""
	_, handled, _ = SubmitViaDaemon(ctx, home, noID)
	is.True(!handled)

	cancel()
	is.NoErr(<-listening)
	_, err = os.Stat(sock)
	is.True(os.IsNotExist(err)) // the socket goes with the daemon
	_, handled, err = SubmitViaDaemon(context.Background(), home, other)
	is.NoErr(err)
	is.True(!handled) // nobody listens: submit locally
}

// A daemon that records a submit and dies before answering: the submitter
// submits again locally with the same id and gets that task, recorded
// once. The same id with another command is refused.
func TestSubmitWhoseAnswerIsLostIsRecordedOnce(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	client, err := NewInsertClient(e.st)
	is.NoErr(err)
	intents := &Intents{Store: e.st, Client: client, Home: e.d.Home}
	sock, _ := SubmitSocket(e.d.Home)
	ln, err := net.Listen("unix", sock)
	is.NoErr(err)
	defer ln.Close()
	go func() { // a daemon that dies between its commit and its answer
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		var wire submitWire
		if json.NewDecoder(bufio.NewReader(conn)).Decode(&wire) == nil {
			_, _, _ = intents.Submit(e.ctx, wire.Req)
		}
	}()
	req := SubmitRequest{RepoDir: e.repo.Root, Argv: []string{"agent"}, ID: grove.NewTaskID()}
	_, handled, err := SubmitViaDaemon(e.ctx, e.d.Home, req)
	is.NoErr(err)
	is.True(!handled)
	task, created, err := intents.Submit(e.ctx, req) // the CLI's fallback
	is.NoErr(err)
	is.True(!created)
	is.Equal(task.ID, req.ID)
	var n int
	is.NoErr(e.st.DB().QueryRowContext(e.ctx, `SELECT COUNT(*) FROM river_job WHERE kind = 'create_worktree'`).Scan(&n))
	is.Equal(n, 1) // one task, one job

	clash := req
	clash.Argv = []string{"another"}
	_, _, err = intents.Submit(e.ctx, clash)
	is.True(err != nil)
	_, _, err = intents.Submit(e.ctx, SubmitRequest{RepoDir: e.repo.Root, Argv: []string{"agent"}, ID: "t../../x"})
	is.True(err != nil) // a malformed id
}
