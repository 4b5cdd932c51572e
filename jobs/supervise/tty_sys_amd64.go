package supervise

import "golang.org/x/sys/unix"

// amd64 also has the older system calls (arm64 only has the p* forms).
func init() {
	for nr, k := range map[int]int{unix.SYS_POLL: kindPoll, unix.SYS_SELECT: kindSelect, unix.SYS_EPOLL_WAIT: kindEpoll} {
		pollKinds[nr] = k
	}
	callNames[unix.SYS_POLL] = "poll"
	callNames[unix.SYS_SELECT] = "select"
	callNames[unix.SYS_EPOLL_WAIT] = "epoll_wait"
}
