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

	"golang.org/x/sys/unix"

	"github.com/grove-dev/grove"
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
// request is resolved in the submitter's environment, as before. Only the
// daemon's own user may connect: the socket lives in the home (mode 0700)
// and the daemon checks the peer's uid (SO_PEERCRED).

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
}

// submitReply is the daemon's answer: the task id, or an error, or
// Declined (submit locally).
type submitReply struct {
	ID       string     `json:"id,omitempty"`
	Declined string     `json:"declined,omitempty"` // why the daemon declined
	Err      *wireError `json:"err,omitempty"`
}

// wireError is an error as it crosses the socket: its message, its hint
// and the sentinel it wraps (by name), so the CLI reports it and exits
// with the code a local submit would have.
type wireError struct {
	Msg  string `json:"msg"`
	Hint string `json:"hint,omitempty"`
	Kind string `json:"kind,omitempty"`
}

// wireKinds names the sentinels a submit's error may wrap.
var wireKinds = map[string]error{
	"usage": grove.ErrUsage, "bad_request": grove.ErrBadRequest, "not_found": grove.ErrNotFound,
	"conflict": grove.ErrConflict, "at_risk": grove.ErrAtRisk,
}

func toWire(err error) *wireError {
	w := &wireError{Msg: err.Error(), Hint: grove.HintOf(err)}
	for name, sentinel := range wireKinds {
		if errors.Is(err, sentinel) {
			w.Kind = name
			break
		}
	}
	return w
}

func (w *wireError) err() error {
	if sentinel := wireKinds[w.Kind]; sentinel != nil || w.Hint != "" {
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
// returns the task's id. handled is false when the request was not
// answered (no daemon, a declined request, a connection lost before the
// reply): the caller then submits locally with the same req (req.ID must
// be set, so that a request the daemon did record is not recorded again).
// An error with handled true is the submit's own error.
func SubmitViaDaemon(ctx context.Context, home string, req SubmitRequest) (id string, handled bool, err error) {
	path, ok := SubmitSocket(home)
	if home == "" || !ok || req.ID == "" {
		return "", false, nil
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", false, nil // no daemon (or a dead one's socket file)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(submitReplyWait))
	if err := json.NewEncoder(conn).Encode(submitWire{Req: req, GitEnv: gitEnv(os.Environ())}); err != nil {
		return "", false, nil
	}
	var reply submitReply
	if err := json.NewDecoder(bufio.NewReader(conn)).Decode(&reply); err != nil {
		return "", false, nil
	}
	switch {
	case reply.Err != nil:
		return "", true, reply.Err.err()
	case reply.Declined != "" || reply.ID != req.ID:
		return "", false, nil
	}
	return reply.ID, true, nil
}

// maxSubmitRequest bounds a request's size (argv, environment, options).
const maxSubmitRequest = 16 << 20

// ListenSubmit serves the submit socket of home until ctx ends: each
// connection carries one request, run with Intents.Submit on client (the
// daemon's). The caller holds the daemon lock, so a socket file left by a
// dead daemon is replaced.
func (d *Deps) ListenSubmit(ctx context.Context, home string, client *Client) error {
	path, ok := SubmitSocket(home)
	if !ok {
		return fmt.Errorf("home path too long for a unix socket: %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
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
	if !sameUser(conn) {
		return // not the daemon's user: no answer, the CLI submits locally
	}
	var wire submitWire
	if err := json.NewDecoder(io.LimitReader(conn, maxSubmitRequest)).Decode(&wire); err != nil {
		d.Logger.Warn("submit socket: unreadable request", "err", err)
		return
	}
	var reply submitReply
	switch {
	case !grove.ValidTaskID(wire.Req.ID):
		reply.Declined = "no task id"
	case !maps.Equal(wire.GitEnv, mine):
		reply.Declined = "git environment differs from the daemon's"
	default:
		task, _, err := intents.Submit(ctx, wire.Req)
		if err != nil && ctx.Err() != nil {
			return // stopping: no answer, the CLI submits locally (same id)
		}
		if err != nil {
			reply.Err = toWire(err)
		} else {
			reply.ID = task.ID
			d.Logger.Info("task submitted through the daemon", "task", task.ID)
		}
	}
	_ = json.NewEncoder(conn).Encode(reply)
}

// sameUser reports whether conn's peer runs as this process's user.
func sameUser(conn *net.UnixConn) bool {
	raw, err := conn.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return false
	}
	return int(cred.Uid) == os.Getuid()
}
