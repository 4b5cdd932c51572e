package supervise

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A standby maps in, while it waits, the pages its run will touch first:
// the grove binary's code and read-only data (MADV_POPULATE_READ), its
// data and the start of the Go heap (MADV_POPULATE_WRITE). On a virtual
// machine a page fault can cost ~30 µs (the development box: 29 µs for a
// fresh anonymous page, against ~1 µs a page populated in one call), and
// a run's first steps (decoding the spec, the sandbox, starting the agent)
// took ~120 of them: 3–4 ms of the warm start. Best effort: a kernel
// before 5.14 refuses the advice, and nothing changes.

// heapPrefault is how much of the Go heap, from the arena's start, a
// standby maps in (its resident memory grows by as much).
const heapPrefault = 4 << 20

// heapProbe is a heap object whose address finds the heap's mapping.
var heapProbe *[64]byte

// prefault maps in the pages a run will touch (see above).
func prefault() {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return
	}
	heapProbe = new([64]byte)
	heap := uintptr(unsafe.Pointer(heapProbe))
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		lo, hi, ok := parseRange(fields[0])
		if !ok {
			continue
		}
		perms, path := fields[1], ""
		if len(fields) >= 6 {
			path = fields[5]
		}
		switch {
		case path == exe && (perms == "r-xp" || perms == "r--p"):
			madvise(lo, hi-lo, unix.MADV_POPULATE_READ)
		case path == exe && perms == "rw-p":
			madvise(lo, hi-lo, unix.MADV_POPULATE_WRITE)
		case path == "" && perms == "rw-p" && lo <= heap && heap < hi:
			madvise(lo, min(hi-lo, heapPrefault), unix.MADV_POPULATE_WRITE)
		}
	}
}

// parseRange reads "lo-hi" (hex) of a /proc/PID/maps line.
func parseRange(s string) (lo, hi uintptr, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	l, err1 := strconv.ParseUint(a, 16, 64)
	h, err2 := strconv.ParseUint(b, 16, 64)
	if err1 != nil || err2 != nil || h <= l {
		return 0, 0, false
	}
	return uintptr(l), uintptr(h), true
}

func madvise(addr, length uintptr, advice int) {
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, addr, length, uintptr(advice))
}
