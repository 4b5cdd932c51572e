package supervise

import (
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// reaper makes the supervisor the child subreaper of everything its agent
// starts, and reaps those orphans as they exit.
//
// Without it a process the agent left behind (a `cmd &` of a shell that
// has exited) is re-parented to PID 1, and not every init reaps: in a
// container whose init never calls wait, the zombies that cleanup's SIGKILL
// leaves keep the run's cgroup populated (rmdir says EBUSY) and keep
// counting against its pids limit.
//
// The agent itself is never reaped here: os/exec waits for it, and reaping
// it first would lose its exit status. Only the supervisor process (Main)
// starts one; tests that call run in their own process do not.
type reaper struct {
	agent atomic.Int64 // the agent's pid once started; 0 before
	stop  chan struct{}
	done  chan struct{}
}

// startReaper marks this process as a child subreaper and reaps orphans
// on every SIGCHLD (and once a second, for a SIGCHLD that came while the
// agent was the only waitable child). An error from prctl is returned and
// nothing is started: the run goes on with orphans going to PID 1.
func startReaper() (*reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, err
	}
	r := &reaper{stop: make(chan struct{}), done: make(chan struct{})}
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	go func() {
		defer close(r.done)
		defer signal.Stop(chld)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			r.reap()
			select {
			case <-r.stop:
				r.reap()
				return
			case <-chld:
			case <-tick.C:
			}
		}
	}()
	return r, nil
}

// setAgent records the agent's pid, which reap leaves to os/exec. A nil
// reaper does nothing.
func (r *reaper) setAgent(pid int) {
	if r != nil {
		r.agent.Store(int64(pid))
	}
}

// close reaps what has exited and stops the reaper. A nil reaper does
// nothing.
func (r *reaper) close() {
	if r == nil {
		return
	}
	close(r.stop)
	<-r.done
}

// reap collects every exited child but the agent. It looks before it
// takes (waitid with WNOWAIT names the child), so the agent's status stays
// for os/exec; while the agent is not yet known, nothing is taken.
func (r *reaper) reap() {
	for {
		pid := waitablePid()
		agent := r.agent.Load()
		if pid <= 0 || agent == 0 || int64(pid) == agent {
			return
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err != nil {
			return
		}
	}
}

// waitablePid returns the pid of an exited child without reaping it, or 0
// when none has exited (or there are no children).
func waitablePid() int {
	// siginfo_t for SIGCHLD on 64-bit Linux: si_pid follows signo, errno,
	// code and 4 bytes of padding.
	var info struct {
		signo, errno, code, _ int32
		pid                   int32
		_                     [108]byte
	}
	_, _, e := unix.Syscall6(unix.SYS_WAITID, unix.P_ALL, 0, uintptr(unsafe.Pointer(&info)),
		unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, 0, 0)
	if e != 0 {
		return 0
	}
	return int(info.pid)
}
