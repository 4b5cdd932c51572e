package supervise

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/matryer/is"
	"golang.org/x/sys/unix"
)

func TestRingKeepsTheLastBytes(t *testing.T) {
	is := is.New(t)
	r := newRing(8)
	is.Equal(string(r.Bytes()), "")
	r.Write([]byte("abc"))
	is.Equal(string(r.Bytes()), "abc")
	r.Write([]byte("defgh"))
	is.Equal(string(r.Bytes()), "abcdefgh")
	r.Write([]byte("ij"))
	is.Equal(string(r.Bytes()), "cdefghij")
	r.Write([]byte("0123456789"))
	is.Equal(string(r.Bytes()), "23456789")
	r.Write([]byte("x"))
	is.Equal(string(r.Bytes()), "3456789x")
}

func TestPlainTextStripsEscapes(t *testing.T) {
	is := is.New(t)
	in := "\x1b[1mbold\x1b[0m 1/2\rline 2/2\r\n" + // SGR, a redrawn line, CR LF
		"\x1b]0;title\x07\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\n" + // OSC (BEL and ST)
		"\x1b(Bcharset\x1b=\x07bell\tkept\x1b[?25l\x1b[2K\x1b[10;5Hend\r"
	want := "bold 1/2\nline 2/2\nlink\ncharsetbell\tkeptend\n"
	var whole plainText
	got := whole.Strip(nil, []byte(in))
	if whole.cr {
		got = append(got, '\n')
	}
	is.Equal(string(got), want)
	// Split at every byte: the state carries over.
	var split plainText
	var out []byte
	for i := range len(in) {
		out = split.Strip(out, []byte{in[i]})
	}
	if split.cr {
		out = append(out, '\n')
	}
	is.Equal(string(out), want)
}

// waitOn blocks the test binary (run as a child with GROVE_TEST_WAIT_ON)
// the way kind names, on stdin: see TestMain.
func waitOn(kind string) {
	switch kind {
	case "poll":
		_, _ = unix.Poll([]unix.PollFd{{Fd: 0, Events: unix.POLLIN}}, -1)
	case "select":
		var set unix.FdSet
		set.Set(0)
		_, _ = unix.Select(1, &set, nil, nil, nil)
	case "epoll":
		ep, _ := unix.EpollCreate1(0)
		_ = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, 0, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: 0})
		_, _ = unix.EpollWait(ep, make([]unix.EpollEvent, 1), -1)
	case "epoll-other": // watches a pipe, not its terminal
		var p [2]int
		_ = unix.Pipe(p[:])
		ep, _ := unix.EpollCreate1(0)
		_ = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, p[0], &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(p[0])})
		_, _ = unix.EpollWait(ep, make([]unix.EpollEvent, 1), -1)
	}
}

// The waiting detector's signal: a program blocked in read, poll, select
// or epoll_wait on its terminal is waiting; one sleeping (nanosleep, wait4)
// or waiting on something else is not.
func TestBlockedOnTerminal(t *testing.T) {
	probe := func(cmd *exec.Cmd, limit time.Duration) bool {
		t.Helper()
		f, err := pty.Start(cmd)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); f.Close() }()
		var st syscall.Stat_t
		if err := syscall.Stat(fmt.Sprintf("/proc/%d/fd/0", cmd.Process.Pid), &st); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) {
			if _, how, ok := blockedOnTerminal(cmd.Process.Pid, st.Rdev, "pts"); ok {
				t.Logf("%v: %s", cmd.Args, how)
				return true
			}
			time.Sleep(50 * time.Millisecond)
		}
		return false
	}
	sh := func(script string) *exec.Cmd { return exec.Command("/bin/sh", "-c", script) }
	self := func(how string) *exec.Cmd {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "GROVE_TEST_WAIT_ON="+how)
		return cmd
	}
	for _, c := range []struct {
		cmd  *exec.Cmd
		want bool
	}{
		{sh("read x"), true},
		{self("poll"), true},
		{self("select"), true},
		{self("epoll"), true},
		{sh("sleep 5"), false},
		{self("epoll-other"), false},
	} {
		limit := 10 * time.Second
		if !c.want {
			limit = time.Second
		}
		if got := probe(c.cmd, limit); got != c.want {
			t.Errorf("%v %s: waiting = %v, want %v", c.cmd.Args, c.cmd.Env[len(c.cmd.Env)-1], got, c.want)
		}
	}
}

// A terminal run whose run directory's path is too long for a unix socket
// address is served and reached through /proc/self/fd; input reaches the
// agent, output and the exit code reach the viewer, the socket is 0600 and
// is gone after the end.
func TestTerminalRunLongDir(t *testing.T) {
	is := is.New(t)
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	is.NoErr(os.MkdirAll(dir, 0o700))
	s := spec(t, `printf 'name? '; read x; echo "hello $x"; exit 5`)
	s.TTY = true
	ended := make(chan Exit, 1)
	go func() { ended <- run(dir, s, make(chan os.Signal)) }()
	deadline := time.Now().Add(10 * time.Second)
	conn, err := DialTTY(dir)
	for err != nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		conn, err = DialTTY(dir)
	}
	is.NoErr(err)
	defer conn.Close()
	st, err := os.Stat(filepath.Join(dir, TTYSocket))
	is.NoErr(err)
	is.Equal(st.Mode().Perm(), os.FileMode(0o600))
	var out bytes.Buffer
	var exit *Exit
	sent := false
	for exit == nil {
		typ, p, err := ReadFrame(conn)
		is.NoErr(err)
		switch typ {
		case FrameOutput:
			out.Write(p)
		case FrameExit:
			e, err := ExitPayload(p)
			is.NoErr(err)
			exit = &e
		}
		if !sent && strings.Contains(out.String(), "name? ") {
			sent = true
			is.NoErr(WriteFrame(conn, FrameInput, []byte("grove\r")))
		}
	}
	is.True(strings.Contains(out.String(), "hello grove"))
	is.Equal(exit.Code, 5)
	e := <-ended
	is.Equal(e.Code, 5)
	_, err = os.Stat(filepath.Join(dir, TTYSocket))
	is.True(os.IsNotExist(err))
	raw, err := os.ReadFile(filepath.Join(dir, TTYRawFile))
	is.NoErr(err)
	is.True(bytes.Contains(raw, []byte("hello grove\r\n")))
}
