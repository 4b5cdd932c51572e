package jobs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs/supervise"
	"github.com/grove-dev/grove/store"
)

// Defaults of Deps.ReadyTimeout and Deps.PortLease.
const (
	DefaultReadyTimeout = 30 * time.Second
	DefaultPortLease    = time.Hour
	// restartBackoffCap caps the wait before a restart (1s, 2s, 4s, ...).
	restartBackoffCap = 30 * time.Second
	// restartResetAfter: a service that ran this long before it exited
	// starts its restart budget again.
	restartResetAfter = time.Minute
)

func (d *Deps) readyTimeout() time.Duration {
	if d.ReadyTimeout > 0 {
		return d.ReadyTimeout
	}
	return DefaultReadyTimeout
}

func (d *Deps) portLease() time.Duration {
	if d.PortLease > 0 {
		return d.PortLease
	}
	return DefaultPortLease
}

// sessionLocks serialise, inside one daemon, the operations that start or
// stop a session's service (a task's start, resume, restart, stop, evict).
var sessionLocks sync.Map // home + "\x00" + key -> *sync.Mutex

// lockSession takes the session's lock and returns its release.
func lockSession(d *Deps, key string) func() {
	m, _ := sessionLocks.LoadOrStore(d.Home+"\x00"+key, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// startResult is where a start left a session.
type startResult struct {
	State  grove.SessionState
	Reason string
}

// startSession brings a session up (the caller holds lockSession): state
// starting, the port leased (first, so a full range fails at once), the
// worktree created if needed, the service started and waited for until it
// listens. It ends with the session live, dead (the service exited; a
// restart may be scheduled) or failed (it could not be started), recorded
// with the reason and a "session_<state>" event. An error is a transient
// failure (the caller retries); why names the cause in events.
func (d *Deps) startSession(ctx context.Context, key, why string) (startResult, error) {
	sess, err := d.Store.Session(ctx, key)
	if err != nil {
		return startResult{}, err
	}
	if sess.State == grove.SessionLive && (len(sess.Serve) == 0 || d.serviceRunning(ctx, key)) {
		if !strings.HasPrefix(why, "task ") { // a start or resume asked by hand waits for an outcome
			err := d.Store.InTx(ctx, func(tx *store.Tx) error {
				return tx.AddEvent(ctx, "", key, "session_"+grove.SessionLive, why+": already live")
			})
			return startResult{State: grove.SessionLive}, err
		}
		return startResult{State: grove.SessionLive}, nil
	}
	port := 0
	var leaseErr error
	// Who listens where, read once (not inside the write transaction);
	// a port is free when nothing listens on it and a bind succeeds.
	listening, err := readPorts(d.PortLo, d.PortHi)
	if err != nil {
		return startResult{}, err
	}
	free := func(p int) bool {
		if u := listening[p]; u != nil && len(u.Listen) > 0 {
			return false
		}
		return bindable(p)
	}
	err = d.Store.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.MoveSession(ctx, key, nil, grove.SessionStarting, ""); err != nil {
			return err
		}
		if len(sess.Serve) == 0 {
			return nil
		}
		port, leaseErr = tx.LeasePort(ctx, key, d.PortLo, d.PortHi, free)
		var ue *grove.UserError
		if errors.As(leaseErr, &ue) {
			return nil
		}
		return leaseErr
	})
	if err != nil {
		return startResult{}, err
	}
	if leaseErr != nil {
		return d.settleStart(ctx, key, why, grove.SessionFailed, withHint(leaseErr))
	}
	grove.Failpoint("session.start.after-lease")
	sess.Port = port
	ws, err := d.ensureSessionWorktree(ctx, sess)
	if err != nil {
		return startResult{}, fmt.Errorf("create session worktree: %w", err)
	}
	if failed, err := d.setUpSession(ctx, sess, ws); err != nil {
		return startResult{}, fmt.Errorf("set up session worktree: %w", err)
	} else if failed != "" {
		return d.settleStart(ctx, key, why, grove.SessionFailed, failed)
	}
	res, err := d.startService(ctx, sess, ws)
	if err != nil {
		return startResult{}, err
	}
	if res.State == grove.SessionDead {
		return res, nil // recorded by serviceExited
	}
	msg := res.Reason
	if res.State == grove.SessionLive {
		msg = "live at " + ws.Path
		if port != 0 {
			msg += fmt.Sprintf(", service listening on port %d", port)
		}
	}
	return d.settleStart(ctx, key, why, res.State, msg)
}

// settleStart records where a start ended (from starting only: a stop or
// close that came meanwhile wins) and its event.
func (d *Deps) settleStart(ctx context.Context, key, why string, state grove.SessionState, msg string) (startResult, error) {
	reason := msg
	if state == grove.SessionLive {
		reason = ""
	}
	err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		ok, err := tx.MoveSession(ctx, key, []grove.SessionState{grove.SessionStarting}, state, reason)
		if err != nil || !ok {
			return err
		}
		if state == grove.SessionLive {
			if err := tx.NoteActivity(ctx, key, why); err != nil {
				return err
			}
		}
		return tx.AddEvent(ctx, "", key, "session_"+state, why+": "+msg)
	})
	return startResult{State: state, Reason: msg}, err
}

func withHint(err error) string {
	msg := err.Error()
	if h := grove.HintOf(err); h != "" {
		msg += "; hint: " + h
	}
	return msg
}

// serviceRunning reports whether the session's newest service run still
// has its supervisor.
func (d *Deps) serviceRunning(ctx context.Context, key string) bool {
	var run grove.Run
	err := d.Store.Read(ctx, func(tx *store.Tx) error {
		var err error
		run, err = tx.ServiceRun(ctx, key)
		return err
	})
	return err == nil && supervise.Alive(run.Dir)
}

// startService starts the session's service under a supervisor on its
// leased port, unless it has none or it already runs, and waits until a
// process of the service's tree listens on the port. Before starting, the
// port must be free: a port something else listens on fails the session,
// naming the process. With no service the session is live at once.
func (d *Deps) startService(ctx context.Context, sess grove.Session, ws grove.Workspace) (startResult, error) {
	if len(sess.Serve) == 0 {
		return startResult{State: grove.SessionLive}, nil
	}
	port := sess.Port
	n := 1
	var (
		run     grove.Run
		running bool
	)
	err := d.Store.Read(ctx, func(tx *store.Tx) error {
		r, err := tx.ServiceRun(ctx, sess.ID)
		if errors.Is(err, grove.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		run, running, n = r, supervise.Alive(r.Dir), r.Attempt+1
		return nil
	})
	if err != nil {
		return startResult{}, err
	}
	if !running {
		if run.ID != 0 {
			// What an earlier run left behind (a daemonized child, after a
			// crash between its end and its sweep) is this session's: it
			// goes before the port is judged.
			old := serviceTree{supPid: run.Pid, supStart: run.StartTime, key: sess.ID, worktree: ws.Path}
			if left := old.kill(min(d.Grace, 3*time.Second)); len(left) > 0 {
				return startResult{}, fmt.Errorf("processes %v of an earlier service run survive SIGKILL", left)
			}
		}
		if msg, taken := portTaken(port); taken {
			return startResult{State: grove.SessionFailed,
				Reason: msg + "; hint: stop that process, or close the session and start it again"}, nil
		}
		dir := filepath.Join(d.Home, "runs", fmt.Sprintf("s-%s-svc-%d", sess.ID, n))
		env := AgentEnv(grove.Task{ID: "", Path: ""}, ws, port)
		env = append(env, "GROVE_SESSION="+sess.ID)
		repoRow, err := d.Store.Repo(ctx, sess.RepoID)
		if err != nil {
			return startResult{}, err
		}
		sb, sbEnv, err := d.serviceSandbox(ctx, repoRow.Path, ws, dir)
		if err != nil {
			return startResult{}, err
		}
		env = append(env, sbEnv...)
		started, err := d.startSupervisor(dir, supervise.Spec{WorkDir: ws.Path, Argv: sess.Serve, Env: env, Grace: d.Grace, Sandbox: sb})
		if err != nil {
			return startResult{}, err
		}
		d.Logger.Info("service started", "session", sess.ID, "port", port, "supervisor", started.Pid)
		run = grove.Run{Attempt: n, Pid: started.Pid, StartTime: started.StartTime, BootID: started.BootID, Dir: dir, StartedAt: time.Now()}
		err = d.Store.InTx(ctx, func(tx *store.Tx) error {
			if err := tx.InsertServiceRun(ctx, sess.ID, n, run); err != nil {
				return err
			}
			r, err := tx.ServiceRun(ctx, sess.ID)
			run.ID = r.ID
			if err != nil {
				return err
			}
			return tx.AddEvent(ctx, "", sess.ID, "service_started", fmt.Sprintf("port %d, supervisor pid %d", port, started.Pid))
		})
		if err != nil {
			return startResult{}, err
		}
		grove.Failpoint("session.start.after-service")
	}
	return d.waitReady(ctx, sess, ws, run, port)
}

// portTaken reports whether something listens on port, and who.
func portTaken(port int) (string, bool) {
	use, err := readPorts(port, port)
	if err != nil {
		return fmt.Sprintf("cannot tell whether port %d is free: %v", port, err), true
	}
	if u := use[port]; u != nil && len(u.Listen) > 0 {
		return fmt.Sprintf("port %d is in use by %s, not by this session's service", port, describePids(holders(u.Listen))), true
	}
	if !portFree(port) {
		return fmt.Sprintf("port %d cannot be bound (in use outside this network view?)", port), true
	}
	return "", false
}

// waitReady waits until a process of the service's tree listens on port
// (live), the service exits (dead, recorded by serviceExited with the exit
// code and the log's last lines), a process outside the tree answers the
// port, or the ready timeout passes (failed; the tree is stopped).
func (d *Deps) waitReady(ctx context.Context, sess grove.Session, ws grove.Workspace, run grove.Run, port int) (startResult, error) {
	tree := serviceTree{supPid: run.Pid, supStart: run.StartTime, key: sess.ID, worktree: ws.Path}
	deadline := time.Now().Add(d.readyTimeout())
	for {
		if e, ended := runEnded(run.Dir); ended {
			why := fmt.Sprintf("before listening on port %d", port)
			if msg, taken := portTaken(port); taken {
				why += " (" + msg + ")"
			}
			return d.serviceExited(ctx, sess.ID, run, e, why)
		}
		use, err := readPorts(port, port)
		if err != nil {
			return startResult{}, err
		}
		if u := use[port]; u != nil && len(u.Listen) > 0 {
			if tree.owns(u.Listen) {
				if accepts(port) {
					return startResult{State: grove.SessionLive}, nil
				}
				// Listening, but not on loopback yet (or its backlog is
				// full): wait for a connection to be accepted.
			} else {
				who := describePids(holders(u.Listen))
				if err := d.stopService(ctx, sess.ID); err != nil {
					return startResult{}, err
				}
				return startResult{State: grove.SessionFailed,
					Reason: fmt.Sprintf("port %d is answered by %s, outside the service's processes; service stopped", port, who)}, nil
			}
		}
		if time.Now().After(deadline) {
			if err := d.stopService(ctx, sess.ID); err != nil {
				return startResult{}, err
			}
			reason := fmt.Sprintf("service did not listen on port %d within %s; stopped", port, d.readyTimeout())
			if tail := logTail(filepath.Join(run.Dir, supervise.LogFile), 5); tail != "" {
				reason += "; log: " + tail
			}
			return startResult{State: grove.SessionFailed, Reason: reason}, nil
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return startResult{}, err
		}
	}
}

// stoppingFile in a service's run directory says grove is stopping it on
// purpose (stop, evict, close): its end is not a crash.
const stoppingFile = "stopping"

func stopping(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, stoppingFile))
	return err == nil
}

// runEnded reports whether a service run is over, and how: its exit
// file, or a supervisor gone without one (lost).
func runEnded(dir string) (supervise.Exit, bool) {
	if e, ok, err := supervise.ReadExit(dir); ok || err != nil {
		if err != nil {
			return supervise.Exit{Code: -1, Reason: supervise.ReasonLost, Message: err.Error()}, true
		}
		return e, true
	}
	if supervise.Alive(dir) {
		return supervise.Exit{}, false
	}
	if e, ok, _ := supervise.ReadExit(dir); ok { // written just before it ended
		return e, true
	}
	return supervise.Exit{Code: -1, Reason: supervise.ReasonLost, Message: "supervisor ended without recording an exit"}, true
}

// serviceExited records that a session's service run ended on its own:
// the run's exit code, a service_exited event with the log's last lines,
// state dead with the reason, and, under the session's restart policy and
// within its limit, the next restart's time (1s, 2s, 4s... up to 30s; a
// service that ran a minute starts its budget again). It does nothing if
// the session is no longer live or starting, or if run is not its newest
// service run (a stop, close or newer start came first).
func (d *Deps) serviceExited(ctx context.Context, key string, run grove.Run, e supervise.Exit, why string) (startResult, error) {
	res := startResult{State: grove.SessionDead}
	var ws grove.Workspace
	err := d.Store.InTx(ctx, func(tx *store.Tx) error {
		if w, err := tx.SessionWorkspace(ctx, key); err == nil {
			ws = w
		}
		sess, err := tx.Session(ctx, key)
		if err != nil {
			return err
		}
		cur, err := tx.ServiceRun(ctx, key)
		if err != nil {
			return err
		}
		if cur.ID != run.ID {
			res.State = sess.State
			return nil
		}
		if run.EndedAt == nil {
			if err := tx.EndRun(ctx, run.ID, e.Code, e.Reason); err != nil {
				return err
			}
		}
		if (sess.State != grove.SessionLive && sess.State != grove.SessionStarting) || stopping(run.Dir) {
			res.State = sess.State
			return nil
		}
		msg := fmt.Sprintf("service exited with code %d (%s)", e.Code, e.Reason)
		if e.Message != "" {
			msg += ": " + e.Message
		}
		if why != "" {
			msg += " " + why
		}
		if tail := logTail(filepath.Join(run.Dir, supervise.LogFile), 5); tail != "" {
			msg += "; log: " + tail
		}
		n := sess.Restarts
		if time.Since(run.StartedAt) >= restartResetAfter {
			n = 0
		}
		var at *time.Time
		switch {
		case !wantsRestart(sess.Restart, e):
		case n >= sess.MaxRestarts:
			msg += fmt.Sprintf("; restart limit (%d) reached", sess.MaxRestarts)
		default:
			wait := min(time.Second<<n, restartBackoffCap)
			t := time.Now().Add(wait)
			at = &t
			n++
			msg += fmt.Sprintf("; restart %d of %d in %s", n, sess.MaxRestarts, wait)
		}
		res.Reason = msg
		if _, err := tx.MoveSession(ctx, key, nil, grove.SessionDead, msg); err != nil {
			return err
		}
		if err := tx.SetRestarts(ctx, key, n, at); err != nil {
			return err
		}
		return tx.AddEvent(ctx, "", key, "service_exited", msg)
	})
	if err == nil && res.State == grove.SessionDead {
		grove.Failpoint("session.exit.after-record")
		// Dead means nothing of it is left: what it started and left
		// behind (a daemonized child) would hold the port.
		tree := serviceTree{supPid: run.Pid, supStart: run.StartTime, key: key, worktree: ws.Path}
		if left := tree.kill(min(d.Grace, 3*time.Second)); len(left) > 0 {
			d.Logger.Warn("processes of a dead service survive SIGKILL", "session", key, "pids", left)
		}
	}
	return res, err
}

// wantsRestart applies a restart policy to how a service ended.
func wantsRestart(policy grove.RestartPolicy, e supervise.Exit) bool {
	switch policy {
	case grove.RestartAlways:
		return true
	case grove.RestartOnFailure:
		return e.Code != 0 || e.Reason != supervise.ReasonExited
	}
	return false
}

// accepts reports whether a TCP connection to port on loopback (IPv4,
// then IPv6) is accepted: the service is reachable, not only listening.
// The probe closes with a reset (linger 0), so it leaves no TIME_WAIT
// socket that the activity sampler (readPorts) would count as a client's
// request for a minute.
func accepts(port int) bool {
	for _, host := range []string{"127.0.0.1", "::1"} {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(port)), 200*time.Millisecond)
		if err == nil {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			c.Close()
			return true
		}
	}
	return false
}

// setUpSession prepares a session's worktree before its service starts,
// as a task's (submodules from local copies, copies, setup commands under
// the supervisor), when it is not set up under the current key yet. A
// failed setup is returned as failed (the session's reason, with the
// log's last lines); a setup that ended is never run again for the same
// key (its run directory records it).
func (d *Deps) setUpSession(ctx context.Context, sess grove.Session, ws grove.Workspace) (failed string, err error) {
	repo, err := d.Repo(ctx, sess.RepoPath)
	if err != nil {
		return "", err
	}
	if _, err := repo.InitSubmodules(ctx, ws.Path); err != nil {
		var ue *grove.UserError
		if errors.As(err, &ue) {
			return withHint(err), nil
		}
		return "", err
	}
	s, key, err := d.settingsAt(ctx, repo, ws.BaseCommit)
	if err != nil || key == "" || key == ws.SetupKey {
		return "", err
	}
	env := append(AgentEnv(grove.Task{}, ws, sess.Port), "GROVE_SESSION="+sess.ID)
	dir := filepath.Join(d.Home, "runs", fmt.Sprintf("s-%s-setup-%s", sess.ID, key))
	res, err := d.runSetup(ctx, repo, s, ws, setupRun{dir: dir, env: env})
	if err != nil {
		return "", err
	}
	if res.failed != "" {
		return res.failed, d.Store.InTx(ctx, func(tx *store.Tx) error { return tx.AddEvent(ctx, "", sess.ID, ReasonSetupFailed, res.failed) })
	}
	return "", d.Store.InTx(ctx, func(tx *store.Tx) error {
		if err := tx.SetSetupKey(ctx, ws.ID, key); err != nil {
			return err
		}
		return tx.AddEvent(ctx, "", sess.ID, "setup_done", res.summary)
	})
}
