package prefault

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/matryer/is"
)

func TestParseMapsLine(t *testing.T) {
	is := is.New(t)
	lo, hi, perms, path, ok := parseMapsLine([]byte("00402000-00de1000 r-xp 00002000 fd:01 1234   /work/my dir/bin/grove"))
	is.True(ok)
	is.Equal(lo, uintptr(0x402000))
	is.Equal(hi, uintptr(0xde1000))
	is.Equal(perms, "r-xp")
	is.Equal(string(path), "/work/my dir/bin/grove") // spaces kept
	_, _, perms, path, ok = parseMapsLine([]byte("7ff124000000-7ff124021000 rw-p 00000000 00:00 0 "))
	is.True(ok)
	is.Equal(perms, "rw-p")
	is.Equal(len(path), 0) // anonymous
	for _, bad := range []string{"", "zz-10 r-xp 0 0 0", "2000-1000 r-xp 0 0 0", "1000 r-xp 0 0 0", "1000-2000 r-xp"} {
		_, _, _, _, ok := parseMapsLine([]byte(bad))
		is.True(!ok) // refused: bad
	}
}

// rss is this process's resident memory in kB.
func rss(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		t.Skip("no /proc/self/smaps_rollup")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Rss:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Rss line")
	return 0
}

// Binary maps the executable's code in: the process's resident memory
// grows by megabytes (the test binary's code is several).
func TestBinaryMapsTheExecutableIn(t *testing.T) {
	is := is.New(t)
	probe, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	is.NoErr(err)
	if err := syscall.Madvise(probe, populateWrite); err != nil {
		t.Skipf("kernel without MADV_POPULATE_WRITE: %v", err)
	}
	is.NoErr(syscall.Munmap(probe))
	before := rss(t)
	Binary(4 << 20)
	after := rss(t)
	t.Logf("resident %d kB → %d kB", before, after)
	is.True(after-before >= 1024)
}
