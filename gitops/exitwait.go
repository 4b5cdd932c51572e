package gitops

import (
	"os"

	"golang.org/x/sys/unix"
)

// awaitExit returns once process p has exited (it is not reaped: the
// caller's Wait does that), waiting in Go's network poller on a pidfd
// instead of in a blocking waitid.
//
// Why it matters: a goroutine blocked in a system call keeps its P until
// the runtime's monitor thread (sysmon) takes it back, and when the call
// returns to an idle process the monitor restarts polling every 20 µs.
// With a git process every few milliseconds the daemon's monitor woke
// ~700 times per task, ~35 µs of CPU each on a small virtual machine: a
// quarter of the daemon's CPU. Parked on the poller, the goroutine holds
// no P and its wake-up is not a system call's return.
//
// Best effort: without pidfds (Linux < 5.10) it returns at once and Wait
// blocks as before.
func awaitExit(p *os.Process) {
	fd, err := unix.PidfdOpen(p.Pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd") // non-blocking: registered with the poller
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		// Readable once the process has exited; false parks until then.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 0)
		return err != nil || n > 0
	})
}
