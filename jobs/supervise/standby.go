package supervise

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops/procscan"
	"github.com/grove-dev/grove/jobs/supervise/prefault"
)

// A standby is a supervisor started ahead of any task: `grove supervise
// --standby` runs, initialises, and blocks reading a socket. Handing it a
// run (Standby.Run) sends the run directory and two descriptors, the run's
// lock (already locked, as Start hands it down) and its log; from then on
// it is exactly the supervisor Start would have launched, minus the start
// of a large Go binary (~25 ms idle), which a run would otherwise pay
// between its "started" event and the agent's start. The daemon keeps
// standbys by default (grove serve --standbys, jobs/standby.go).
//
// A standby that reads end-of-file (its daemon closed the socket or died)
// exits without doing anything. A message lost with a standby that died
// before reading it closes the descriptors in it: the run's lock is free
// again and no proc file was written, so no agent ran. As after a
// supervisor that died on start: the daemon that handed the run sees its
// supervisor gone and fails the task as lost (grove retry runs it); a
// daemon that died before recording the run finds it never started
// (Probe) and starts it. Never twice.

// StandbyArg is the argument after `supervise` that starts a standby.
const StandbyArg = "--standby"

// standbyFd is the standby's end of the socket, then (after a hand-off)
// the run lock: the descriptor Main expects the lock at.
const standbyFd = 3

// Standby is a supervisor waiting for a run. Run hands it one; Close sends
// it away. Not safe for concurrent use.
type Standby struct {
	proc Proc
	sock *os.File // the daemon's end; nil once used or closed
	done <-chan struct{}
}

// StartStandby launches `exe supervise --standby`: own session, stdin,
// stdout and stderr on /dev/null until it gets a run, working directory /.
func StartStandby(exe string) (*Standby, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("standby supervisor: socket pair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "standby"), os.NewFile(uintptr(fds[1]), "standby-peer")
	defer theirs.Close()
	p, done, err := launch(exe, StandbyArg, "/", nil, theirs)
	if err == nil && p.StartTime == 0 {
		err = errors.New("it exited at once")
	}
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("standby supervisor: %w", err)
	}
	return &Standby{proc: p, sock: ours, done: done}, nil
}

// Alive reports whether the standby can still take a run.
func (s *Standby) Alive() bool {
	if s == nil || s.sock == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Close sends an unused standby away (it exits on end-of-file). Safe to
// call after Run.
func (s *Standby) Close() {
	if s != nil && s.sock != nil {
		s.sock.Close()
		s.sock = nil
	}
}

// Run does what Start does (writes spec to dir, takes the run's lock, opens
// its log) and hands the run to the standby instead of launching a new
// supervisor. The standby is used up either way. An error means nothing
// was handed over: the lock is released, and the caller may Start a
// supervisor instead.
func (s *Standby) Run(dir string, spec Spec) (Started, error) {
	defer s.Close()
	if !s.Alive() {
		return Started{}, errors.New("standby supervisor is gone")
	}
	lock, logf, err := prepareRun(dir, spec)
	if err != nil {
		return Started{}, err
	}
	defer lock.Close()
	defer logf.Close()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Started{}, fmt.Errorf("run dir %s: %w", dir, err)
	}
	rights := unix.UnixRights(int(lock.Fd()), int(logf.Fd()))
	if err := unix.Sendmsg(int(s.sock.Fd()), []byte(abs), rights, nil, unix.MSG_NOSIGNAL); err != nil {
		return Started{}, fmt.Errorf("hand run to standby supervisor: %w", err)
	}
	return Started{Proc: s.proc, Done: s.done}, nil
}

// prepareRun writes spec to dir (created if needed), opens and locks the
// run's lock file and opens its log for appending: what a supervisor is
// handed.
func prepareRun(dir string, spec Spec) (lock, logf *os.File, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("create run dir %s: %w", dir, err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, nil, fmt.Errorf("encode spec: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, SpecFile), b); err != nil {
		return nil, nil, err
	}
	lock, err = os.OpenFile(filepath.Join(dir, LockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open run lock: %w", err)
	}
	if ok, err := grove.TryFlock(lock, unix.LOCK_EX); !ok {
		lock.Close()
		return nil, nil, fmt.Errorf("run %s already has a supervisor (lock: %v)", dir, err)
	}
	logf, err = os.OpenFile(filepath.Join(dir, LogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		lock.Close()
		return nil, nil, fmt.Errorf("open run log: %w", err)
	}
	return lock, logf, nil
}

// handOff is the clock tick at which a standby got its run (0: this
// supervisor was started for its run).
var handOff uint64

// sweepSince is the clock tick from which the cleanup looks for the
// agent's escaped processes: the hand-off for a standby, else the
// supervisor's own start (0, everyone, if unreadable).
func sweepSince() uint64 {
	if handOff > 0 {
		return handOff
	}
	t, _ := procscan.StartTicks(os.Getpid())
	return t
}

// MainArg is the body of `grove supervise ARG`: StandbyArg waits as a
// standby (StandbyMain), anything else is a run directory (Main).
func MainArg(arg string) error {
	if arg == StandbyArg {
		return StandbyMain()
	}
	return Main(arg)
}

// StandbyMain is the body of `grove supervise --standby`: it waits for a
// run on descriptor 3 and then runs it as Main does. End-of-file (no run
// will come) ends it with nil.
func StandbyMain() error {
	prefault.Binary(4 << 20) // the pages its run touches first, mapped in while it waits

	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(2*4))
	var (
		n, oobn int
		err     error
	)
	for {
		n, oobn, _, _, err = unix.Recvmsg(standbyFd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("standby: read run: %w", err)
	}
	if n == 0 && oobn == 0 {
		return nil // the daemon is gone or sent us away
	}
	lock, logFd, err := receivedFds(oob[:oobn])
	if err != nil {
		return fmt.Errorf("standby: %w", err)
	}
	dir := string(buf[:n])
	// The clock tick of the hand-off: processes older than it cannot be
	// the agent's (a standby may have waited for minutes).
	handOff, _ = procscan.NowTicks() // unreadable: 0, the standby's start
	// The lock takes the socket's place at fd 3; the log becomes stdout
	// and stderr, as Start sets them up.
	for _, m := range [][2]int{{lock, standbyFd}, {logFd, 1}, {logFd, 2}} {
		if err := unix.Dup3(m[0], m[1], 0); err != nil {
			return fmt.Errorf("standby: take descriptor %d: %w", m[1], err)
		}
	}
	unix.Close(lock)
	unix.Close(logFd)
	if err := os.Chdir(dir); err != nil {
		return fmt.Errorf("standby: enter run dir: %w", err)
	}
	return Main(dir)
}

// receivedFds takes the two descriptors (lock, log) out of a message's
// control data.
func receivedFds(oob []byte) (lock, logFd int, err error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, 0, fmt.Errorf("parse hand-off: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			return 0, 0, fmt.Errorf("parse hand-off: %w", err)
		}
		fds = append(fds, got...)
	}
	if len(fds) != 2 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return 0, 0, fmt.Errorf("hand-off carried %d descriptors, want 2", len(fds))
	}
	return fds[0], fds[1], nil
}
