package supervise

import "golang.org/x/sys/unix"

// amd64 also has the older system calls (arm64 only has the p* forms).
func init() {
	pollCalls[unix.SYS_POLL] = "poll"
	pollCalls[unix.SYS_SELECT] = "select"
	pollCalls[unix.SYS_EPOLL_WAIT] = "epoll_wait"
}
