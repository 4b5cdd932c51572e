package jobs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
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
	if b, _ := os.ReadFile("/proc/self/status"); strings.Contains(string(b), "NoNewPrivs:\t1") {
		t.Skip("the tests run with no_new_privs: the daemon declines such submitters by design")
	}
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
	got, handled, lost, err := SubmitViaDaemon(ctx, home, req)
	is.NoErr(err)
	is.True(handled)
	is.True(!lost)
	is.Equal(got.ID, req.ID)
	is.Equal(got.State, grove.StateQueued) // as recorded, whatever the daemon did since
	id := got.ID
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
	_, handled, _, err = SubmitViaDaemon(ctx, home, bad)
	is.True(handled)
	is.True(errors.Is(err, grove.ErrBadRequest))
	is.True(grove.HintOf(err) != "")
	_, err = e.st.Task(ctx, bad.ID)
	is.True(errors.Is(err, grove.ErrNotFound))

	// Another git environment (GIT_DIR, HOME, …) is resolved locally.
	t.Setenv("GIT_DIR", filepath.Join(e.repo.Root, ".git"))
	other := req
	other.ID = grove.NewTaskID()
	_, handled, lost, err = SubmitViaDaemon(ctx, home, other)
	is.NoErr(err)
	is.True(!handled)
	is.True(!lost) // declined: nothing recorded
	_, err = e.st.Task(ctx, other.ID)
	is.True(errors.Is(err, grove.ErrNotFound))
	is.NoErr(os.Unsetenv("GIT_DIR"))

	// No id: not handed over (a lost answer could not be retried safely).
	noID := req
	noID.ID = ""
	_, handled, _, _ = SubmitViaDaemon(ctx, home, noID)
	is.True(!handled)

	// A field the daemon does not know (a newer CLI) is declined, not
	// dropped on the way.
	conn, err := net.Dial("unix", sock)
	is.NoErr(err)
	_, err = conn.Write([]byte(`{"req":{"RepoDir":"` + e.repo.Root + `","Argv":["x"],"ID":"` + grove.NewTaskID() + `","Future":1},"git_env":{}}` + "\n"))
	is.NoErr(err)
	var reply submitReply
	is.NoErr(json.NewDecoder(conn).Decode(&reply))
	conn.Close()
	is.True(strings.Contains(reply.Declined, "not understood"))

	cancel()
	is.NoErr(<-listening)
	_, err = os.Stat(sock)
	is.True(os.IsNotExist(err)) // the socket goes with the daemon
	_, handled, lost, err = SubmitViaDaemon(context.Background(), home, other)
	is.NoErr(err)
	is.True(!handled) // nobody listens: submit locally
	is.True(!lost)
}

// A daemon that records a submit and dies before answering: the submitter
// submits again locally with the same id, marked as a resubmit, and gets
// that task, recorded once. Without the mark an id already recorded fails
// (a clash of new ids is never taken for the same task), and a resubmit
// that differs from the recorded task (here its environment) fails too.
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
	req := SubmitRequest{RepoDir: e.repo.Root, Argv: []string{"agent"}, Env: map[string]string{"PROMPT": "a"}, ID: grove.NewTaskID()}
	_, handled, lost, err := SubmitViaDaemon(e.ctx, e.d.Home, req)
	is.NoErr(err)
	is.True(!handled)
	is.True(lost)
	req.Resubmit = true // the CLI's fallback
	task, created, err := intents.Submit(e.ctx, req)
	is.NoErr(err)
	is.True(!created)
	is.Equal(task.ID, req.ID)
	var n int
	is.NoErr(e.st.DB().QueryRowContext(e.ctx, `SELECT COUNT(*) FROM river_job WHERE kind = 'create_worktree'`).Scan(&n))
	is.Equal(n, 1) // one task, one job

	clash := req
	clash.Resubmit = false // a new submit that drew the same id
	_, _, err = intents.Submit(e.ctx, clash)
	is.True(err != nil)
	other := req
	other.Env = map[string]string{"PROMPT": "b"} // same command, another task
	_, _, err = intents.Submit(e.ctx, other)
	is.True(err != nil)
	is.NoErr(e.st.DB().QueryRowContext(e.ctx, `SELECT COUNT(*) FROM task`).Scan(&n))
	is.Equal(n, 1)
	_, _, err = intents.Submit(e.ctx, SubmitRequest{RepoDir: e.repo.Root, Argv: []string{"agent"}, ID: "t../../x"})
	is.True(err != nil) // a malformed id
}
