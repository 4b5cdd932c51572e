package supervise

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"
	"golang.org/x/sys/unix"
)

func needLandlock(t *testing.T, abi int) {
	t.Helper()
	if LandlockABI() < abi {
		// This machine has ABI 7: on it nothing is skipped.
		t.Skipf("kernel Landlock ABI %d < %d", LandlockABI(), abi)
	}
}

// TestSandboxConfinesOnlyTheAgent: the agent writes its work dir and
// TMPDIR, is refused elsewhere, and the supervisor (this process, whose
// thread forked the agent) keeps writing wherever it likes.
func TestSandboxConfinesOnlyTheAgent(t *testing.T) {
	needLandlock(t, 1)
	is := is.New(t)
	outside := t.TempDir()
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	s := spec(t, `echo ok > mine; echo ok > "$TMPDIR/t" && echo tmpok > mine2;
		(echo bad > "$OUT/escape") 2> err1; echo $? > rc1;
		echo x > /dev/null && echo devnull > mine3`)
	s.Env = append(s.Env, "OUT="+outside, "TMPDIR="+tmp)
	s.Sandbox = &Sandbox{Mode: SandboxRequired, Write: []string{s.WorkDir, tmp}, MakeDirs: []string{tmp},
		WriteFiles: []string{"/dev/null"}}
	e := run(dir, s, make(chan os.Signal))
	is.Equal(e.Reason, ReasonExited)
	is.Equal(e.Code, 0)
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(s.WorkDir, name))
		return strings.TrimSpace(string(b))
	}
	is.Equal(read("mine"), "ok")
	is.Equal(read("mine2"), "tmpok")
	is.Equal(read("mine3"), "devnull")
	is.True(strings.Contains(read("err1"), "Permission denied")) // the write outside was refused
	is.True(read("rc1") != "0")
	_, err := os.Stat(filepath.Join(outside, "escape"))
	is.True(os.IsNotExist(err))
	// The supervisor itself is not confined.
	is.NoErr(os.WriteFile(filepath.Join(outside, "supervisor"), []byte("x"), 0o600))
	a, ok, err := ReadApplied(dir)
	is.NoErr(err)
	is.True(ok)
	is.True(a.Landlock)
	is.Equal(a.Net, "allowed")
}

// TestSandboxNetNone: connect to a local listener is refused; binding the
// allowed port works, binding another does not.
func TestSandboxNetNone(t *testing.T) {
	needLandlock(t, 4)
	is := is.New(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	is.NoErr(err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	free := freePort(t)
	other := freePort(t)
	py := `import socket,sys
def bind(p):
    s=socket.socket(socket.AF_INET,socket.SOCK_STREAM,socket.IPPROTO_TCP)
    try:
        s.bind(("127.0.0.1",p)); return "ok"
    except OSError as e: return str(e.errno)
c=socket.socket(socket.AF_INET,socket.SOCK_STREAM,socket.IPPROTO_TCP)
try:
    c.connect(("127.0.0.1",int(sys.argv[1]))); r="ok"
except OSError as e: r=str(e.errno)
open("res","w").write(r+" "+bind(int(sys.argv[2]))+" "+bind(int(sys.argv[3])))`
	for _, net := range []string{"", "none"} {
		s := spec(t, "")
		s.Argv = []string{"/usr/bin/python3", "-c", py, fmt.Sprint(port), fmt.Sprint(free), fmt.Sprint(other)}
		s.Sandbox = &Sandbox{Mode: SandboxRequired, Write: []string{s.WorkDir}, Net: net, BindPorts: []int{free}}
		e := run(t.TempDir(), s, make(chan os.Signal))
		is.Equal(e.Code, 0)
		b, err := os.ReadFile(filepath.Join(s.WorkDir, "res"))
		is.NoErr(err)
		if net == "" {
			is.Equal(string(b), "ok ok ok")
		} else {
			is.Equal(string(b), "13 ok 13") // EACCES for connect and the other port
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestSandboxLimits runs a real supervisor process (this test binary,
// re-executed) so that its resource limits do not touch the test.
//
// This process stands in for an init that never reaps (see subreaper): the
// killed background sleeps must not keep the cgroup busy.
func TestSandboxLimits(t *testing.T) {
	is := is.New(t)
	subreaper(t)
	s := spec(t, `ulimit -c > core; ulimit -n > nofile; ulimit -f > fsize; ulimit -t > cpu;
		head -c 300000 /dev/zero > big 2>/dev/null; wc -c < big > bigsize;
		cat /proc/self/cgroup > cg;
		(i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done; echo $i > forked) 2> forkerr; exit 0`)
	s.Sandbox = &Sandbox{Mode: SandboxBestEffort, Write: []string{s.WorkDir}, WriteFiles: []string{"/dev/null"},
		Limits: Limits{OpenFiles: 100, FileSize: 200 * 1024, CPU: 30e9, Procs: 10, Memory: 256 << 20},
		Cgroup: fmt.Sprintf("test-%d", os.Getpid())}
	dir := runSupervisor(t, s)
	log, _ := os.ReadFile(filepath.Join(dir, LogFile))
	t.Logf("log: %s", log)
	ents, _ := os.ReadDir(s.WorkDir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(s.WorkDir, e.Name()))
		if len(b) < 1000 {
			t.Logf("%s: %s", e.Name(), b)
		}
	}
	e, ok, err := ReadExit(dir)
	is.NoErr(err)
	is.True(ok)
	is.Equal(e.Code, 0)
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(s.WorkDir, name))
		return strings.TrimSpace(string(b))
	}
	is.Equal(read("core"), "0")
	is.Equal(read("nofile"), "100")
	is.Equal(read("fsize"), "400") // bash counts 512-byte blocks
	is.Equal(read("cpu"), "30")
	is.Equal(read("bigsize"), "204800")
	a, ok, err := ReadApplied(dir)
	is.NoErr(err)
	is.True(ok)
	if a.Cgroup == "" {
		t.Logf("cgroup not enforced here: %v", a.NotEnforced)
		is.True(len(a.NotEnforced) >= 2) // said so, never pretended
		return
	}
	is.True(strings.Contains(read("cg"), "grove-test-")) // the agent ran in the run's cgroup
	is.True(read("forked") == "")                        // the loop never got to 40 processes
	is.True(strings.Contains(read("forkerr"), "fork"))   // "Cannot fork"
	// The supervisor's forking thread left the cgroup (Landlock did not
	// stop it), and the cgroup was removed.
	is.True(!strings.Contains(string(log), "could not leave"))
	is.True(!strings.Contains(string(log), "cannot remove"))
	// The cgroup is gone after the run.
	for _, d := range strings.Split(strings.TrimPrefix(a.Cgroup, "v1 "), ", ") {
		_, err := os.Stat(d)
		is.True(os.IsNotExist(err))
	}
}

// runSupervisor runs `supervise DIR` for s in a child process (this test
// binary, see TestMain) and returns DIR once it exits.
func runSupervisor(t *testing.T, s Spec) string {
	t.Helper()
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	st, err := Start(exe, dir, s)
	if err != nil {
		t.Fatal(err)
	}
	<-st.Done
	return dir
}

// BenchmarkStart compares starting (and reaping) a trivial agent with and
// without the sandbox: go test -run - -bench Start ./jobs/supervise.
func BenchmarkStart(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "plain"
		if on {
			name = "sandboxed"
		}
		b.Run(name, func(b *testing.B) {
			work := b.TempDir()
			for b.Loop() {
				s := Spec{WorkDir: work, Argv: []string{"/bin/true"}, Env: []string{"PATH=/usr/bin:/bin"}}
				if on {
					s.Sandbox = &Sandbox{Mode: SandboxBestEffort, Write: []string{work}, WriteFiles: []string{"/dev/null"}}
				}
				if e := run(b.TempDir(), s, make(chan os.Signal)); e.Code != 0 {
					b.Fatal(e)
				}
			}
		})
	}
}

// TestOrphansAreReapedBySupervisor stands in for an init that never reaps
// (as in some containers): this test process becomes a child subreaper and
// does not reap. What the agent leaves behind must then be reaped by the
// supervisor, not end up as zombies here (they would keep a run's cgroup
// busy and count against its pids limit).
func TestOrphansAreReapedBySupervisor(t *testing.T) {
	is := is.New(t)
	subreaper(t)
	before := zombieChildren(t)
	s := spec(t, `(sleep 30 & sleep 30 & exit 0); (exec sleep 0.01 &); sleep 0.2; exit 0`)
	runSupervisor(t, s)
	is.Equal(zombieChildren(t), before) // no new zombie was handed to us
}

// subreaper makes this test process a child subreaper until the test ends.
func subreaper(t *testing.T) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("cannot become a subreaper: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

// zombieChildren counts this process's children that have exited and not
// been reaped.
func zombieChildren(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(os.Getpid()) {
			n++
		}
	}
	return n
}
