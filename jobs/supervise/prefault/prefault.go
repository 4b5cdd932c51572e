// Package prefault maps in, in one system call each, memory a grove
// process is about to touch page by page. On a virtual machine a page
// fault can cost ~30 µs (the development box: 29 µs for a fresh anonymous
// page, against ~1 µs a page populated in one madvise call), and a grove
// process took ~530 of them before main: ~15 ms of every CLI call.
//
// Importing the package maps in the first 2 MB of the Go heap from where
// it stands when the package is initialised (early: it needs only os and
// syscall), which the other packages' initialisation then fills: ~150
// faults fewer per process (2 MB more resident, briefly, for a CLI call).
// Binary maps in the executable's code and data as well, for a process
// that can pay for it ahead (a standby supervisor, while it waits).
//
// Best effort: a kernel before 5.14 refuses the advice and nothing
// changes. The package imports syscall and unsafe only, so that it is
// initialised among the first packages.
package prefault

import (
	"syscall"
	"unsafe"
)

// The madvise advice values (Linux 5.14).
const (
	populateRead  = 22 // MADV_POPULATE_READ
	populateWrite = 23 // MADV_POPULATE_WRITE
)

// initHeap is how much of the heap init maps in.
const initHeap = 2 << 20

// heapProbe is a heap object whose address says where the heap is.
var heapProbe *[64]byte

func init() {
	heapProbe = new([64]byte)
	at := uintptr(unsafe.Pointer(heapProbe)) &^ (64<<10 - 1)
	madvise(at, initHeap, populateWrite)
}

// Binary maps in the executable's code, read-only data and data, and the
// first heapBytes of the heap's mapping.
func Binary(heapBytes uintptr) {
	exe := make([]byte, 4096)
	n, err := syscall.Readlink("/proc/self/exe", exe)
	if err != nil || n <= 0 || n >= len(exe) {
		return
	}
	maps := readAll("/proc/self/maps")
	heap := uintptr(unsafe.Pointer(heapProbe))
	for len(maps) > 0 {
		line := maps
		if i := indexByte(maps, '\n'); i >= 0 {
			line, maps = maps[:i], maps[i+1:]
		} else {
			maps = nil
		}
		lo, hi, perms, path, ok := parseMapsLine(line)
		if !ok {
			continue
		}
		self := string(path) == string(exe[:n])
		switch {
		case self && (perms == "r-xp" || perms == "r--p"):
			madvise(lo, hi-lo, populateRead)
		case self && perms == "rw-p":
			madvise(lo, hi-lo, populateWrite)
		case len(path) == 0 && perms == "rw-p" && lo <= heap && heap < hi:
			madvise(lo, min(hi-lo, heapBytes), populateWrite)
		}
	}
}

// readAll reads a /proc file (nil on error).
func readAll(path string) []byte {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer syscall.Close(fd)
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return out
		}
		out = append(out, buf[:n]...)
	}
}

// parseMapsLine reads "lo-hi perms offset dev inode [path]" of
// /proc/PID/maps.
func parseMapsLine(line []byte) (lo, hi uintptr, perms string, path []byte, ok bool) {
	var fields [6][]byte
	nf := 0
	for i := 0; i < len(line) && nf < 6; {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		if i == len(line) {
			break
		}
		j := i
		if nf == 5 {
			j = len(line) // the path may hold spaces
		} else {
			for j < len(line) && line[j] != ' ' {
				j++
			}
		}
		fields[nf] = line[i:j]
		nf++
		i = j
	}
	if nf < 5 {
		return 0, 0, "", nil, false
	}
	r := fields[0]
	dash := indexByte(r, '-')
	if dash < 0 {
		return 0, 0, "", nil, false
	}
	lo, ok1 := parseHex(r[:dash])
	hi, ok2 := parseHex(r[dash+1:])
	if !ok1 || !ok2 || hi <= lo {
		return 0, 0, "", nil, false
	}
	return lo, hi, string(fields[1]), fields[5], true
}

func parseHex(b []byte) (uintptr, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uintptr
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | uintptr(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | uintptr(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func madvise(addr, length uintptr, advice int) {
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, addr, length, uintptr(advice))
}
