package jobs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs/supervise"
)

// Submitting through the daemon. A `grove submit` that finds the daemon of
// its home (SQLite) hands it the request over a unix socket in the home
// instead of opening the database itself: the daemon's connection has the
// schema parsed and River's statements warm, and it wakes its own queue
// without a datagram, so a task starts about 10 ms sooner. The request is
// the same SubmitRequest and the daemon runs the same Intents.Submit, so
// the checks, the records and the errors are those of a local submit.
//
// Nothing depends on the socket. The CLI chooses the task id and sends it
// with the request; when there is no daemon, or it declines (below), or the
// connection breaks before a reply, the CLI submits locally with the same
// id, and a submit of an id already recorded returns that task: a request
// the daemon recorded just before it died is never recorded twice.
//
// The daemon declines a request whose git environment (HOME,
// XDG_CONFIG_HOME and every GIT_* variable, which decide where git looks
// for the repository and its configuration) differs from its own: such a
// request is resolved in the submitter's environment, as before. It also
// declines a request it does not fully understand (a field it does not
// know: a newer grove), so no option is dropped on the way.
//
// Who may submit this way: the daemon's own user (the peer's uid, by
// SO_PEERCRED), and not from a confined process. A sandboxed agent runs
// as that user, and Landlock does not govern connecting to a socket file,
// but it cannot write the home, so a task it recorded through the daemon
// would be a way out of its sandbox (a task of its own choosing, with any
// --allow-write). Every confined agent runs with no_new_privs (Landlock
// requires it, and it is inherited by all its processes), so a peer
// whose NoNewPrivs is set is declined: it submits locally, which its
// sandbox refuses.

// SubmitSocket is the daemon's submit socket in home; ok is false when the
// path is too long for a unix socket (then there is none).
func SubmitSocket(home string) (path string, ok bool) {
	path = filepath.Join(home, "submit.sock")
	return path, len(path) < 104
}

// submitWire is a request on the submit socket.
type submitWire struct {
	Req    SubmitRequest     `json:"req"`
	GitEnv map[string]string `json:"git_env"` // the submitter's gitEnv
	// Wait, when set, makes the request a wait instead of a submit: the
	// daemon answers once every task of it is over (wait_socket.go).
	Wait []string `json:"wait,omitempty"`
}

// submitReply is the daemon's answer: the task, or an error, or Declined
// (submit locally).
type submitReply struct {
	Task     *grove.Task `json:"task,omitempty"`     // as recorded (state queued)
	Declined string      `json:"declined,omitempty"` // why the daemon declined
	Err      *wireError  `json:"err,omitempty"`
	Over     bool        `json:"over,omitempty"` // a wait's answer: every task is over
}

// wireError is an error as it crosses the socket: its message, its hint
// and the sentinel it wraps (by name), so the CLI reports it and exits
// with the code a local submit would have.
type wireError struct {
	Msg  string `json:"msg"`
	Hint string `json:"hint,omitempty"`
	Kind string `json:"kind,omitempty"`
}

// wireKinds names the sentinels a submit's error may wrap, in the order
// the CLI's exit code looks at them (a bad request before a usage error).
var wireKinds = []struct {
	name string
	err  error
}{
	{"bad_request", grove.ErrBadRequest}, {"usage", grove.ErrUsage}, {"not_found", grove.ErrNotFound},
	{"conflict", grove.ErrConflict}, {"at_risk", grove.ErrAtRisk},
}

func toWire(err error) *wireError {
	w := &wireError{Msg: err.Error(), Hint: grove.HintOf(err)}
	for _, k := range wireKinds {
		if errors.Is(err, k.err) {
			w.Kind = k.name
			break
		}
	}
	return w
}

func (w *wireError) err() error {
	var sentinel error
	for _, k := range wireKinds {
		if k.name == w.Kind {
			sentinel = k.err
		}
	}
	if sentinel != nil || w.Hint != "" {
		return &grove.UserError{Msg: w.Msg, Hint: w.Hint, Err: sentinel}
	}
	return errors.New(w.Msg)
}

// gitEnv is what of environ decides how git finds a repository and its
// configuration: HOME, XDG_CONFIG_HOME and the GIT_* variables.
func gitEnv(environ []string) map[string]string {
	out := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if k == "HOME" || k == "XDG_CONFIG_HOME" || strings.HasPrefix(k, "GIT_") {
			out[k] = v
		}
	}
	return out
}

// submitReplyWait bounds the CLI's wait for the daemon's answer; past it,
// the CLI submits locally (with the same id, so never twice).
const submitReplyWait = 10 * time.Second

// SubmitViaDaemon hands req to the daemon of home, if one listens, and
// returns the task as the daemon recorded it. handled is false when the request was not
// answered (no daemon, a declined request, a connection lost before the
// reply): the caller then submits locally with the same req.ID, and with
// Resubmit set when lost is true (the request reached a daemon that may
// have recorded it before the answer was lost). An error with handled
// true is the submit's own error.
func SubmitViaDaemon(ctx context.Context, home string, req SubmitRequest) (task grove.Task, handled, lost bool, err error) {
	path, ok := SubmitSocket(home)
	if home == "" || !ok || !grove.ValidTaskID(req.ID) {
		return task, false, false, nil
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return task, false, false, nil // no daemon (or a dead one's socket file)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(submitReplyWait))
	req.Resubmit = false
	if err := json.NewEncoder(conn).Encode(submitWire{Req: req, GitEnv: gitEnv(os.Environ())}); err != nil {
		return task, false, true, nil
	}
	var reply submitReply
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&reply); err != nil {
		return task, false, true, nil
	}
	switch {
	case reply.Err != nil:
		return task, true, false, reply.Err.err()
	case reply.Declined != "":
		return task, false, false, nil
	case reply.Task == nil || reply.Task.ID != req.ID:
		return task, false, true, nil
	}
	return *reply.Task, true, false, nil
}

// maxSubmitRequest bounds a request's size (argv, environment, options).
const maxSubmitRequest = 16 << 20

// ListenSubmit serves the submit socket of home until ctx ends: each
// connection carries one request, run with Intents.Submit on client (the
// daemon's). The caller holds the daemon lock, so a socket file left by a
// dead daemon is replaced.
func (d *Deps) ListenSubmit(ctx context.Context, home string, client *Client) error {
	path, err := claimSocketPath(SubmitSocket(home))
	if err != nil {
		return err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	ln.SetUnlinkOnClose(true)
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	intents := &Intents{Store: d.Store, Client: client, Home: home, wake: d.wake}
	mine := gitEnv(os.Environ())
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go d.serveSubmit(ctx, conn, intents, mine)
	}
}

// serveSubmit answers one request on conn.
func (d *Deps) serveSubmit(ctx context.Context, conn *net.UnixConn, intents *Intents, mine map[string]string) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute))
	var reply submitReply
	defer func() { _ = json.NewEncoder(conn).Encode(reply) }()
	if why := refusedPeer(conn); why != "" {
		reply.Declined = why // the CLI submits locally (see above)
		return
	}
	var wire submitWire
	dec := json.NewDecoder(io.LimitReader(conn, maxSubmitRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wire); err != nil {
		reply.Declined = "request not understood: " + err.Error()
		return
	}
	wire.Req.Resubmit = false // only the CLI's local fallback is a resubmit
	switch {
	case wire.Wait != nil:
		reply = d.serveWait(ctx, conn, wire.Wait)
		if reply.Over {
			d.Logger.Debug("wait answered through the daemon", "tasks", strings.Join(wire.Wait, ","))
		}
		_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	case !grove.ValidTaskID(wire.Req.ID):
		reply.Declined = "no task id"
	case !maps.Equal(wire.GitEnv, mine):
		reply.Declined = "git environment differs from the daemon's"
	default:
		task, _, err := intents.Submit(ctx, wire.Req)
		if err != nil && ctx.Err() != nil {
			conn.Close() // stopping: no answer; the CLI resubmits locally (same id)
			return
		}
		if err != nil {
			reply.Err = toWire(err)
		} else {
			reply.Task = &task
			d.Logger.Info("task submitted through the daemon", "task", task.ID)
		}
	}
}

// refusedPeer says why conn's peer may not submit through the daemon ("":
// it may): another user, or a confined process (no_new_privs; see above).
// The peer is blocked on its connection while this runs, so its pid is
// not reused meanwhile.
func refusedPeer(conn *net.UnixConn) string {
	cred, err := supervise.PeerCred(conn)
	if err != nil {
		return "peer unknown"
	}
	if int(cred.Uid) != os.Geteuid() {
		return "another user"
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cred.Pid))
	if err != nil {
		return "peer unknown"
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "NoNewPrivs:"); ok && strings.TrimSpace(v) != "0" {
			return "a confined process (no_new_privs): submit from outside the sandbox"
		}
	}
	return ""
}
