package supervise

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/grove-dev/grove"
)

// RingSize is how much recent raw output a viewer is shown when it attaches.
const RingSize = 64 << 10

// terminal is the pseudo-terminal of a Spec.TTY run. The supervisor owns
// it (the master side, the socket, the recordings), so it lives as long as
// the supervisor and survives the daemon. The agent gets the slave side as
// its stdin, stdout, stderr and controlling terminal, in a session of its
// own. Every method is a no-op on a nil *terminal (a run without TTY).
type terminal struct {
	dir    string
	master *os.File
	slave  *os.File
	// slaveName is the slave's path (/dev/pts/N).
	slaveName string
	raw       *os.File // TTYRawFile
	log       *os.File // the run's log (the supervisor's stdout): plain text
	ln        *net.UnixListener

	mu       sync.Mutex
	ring     *ring
	text     plainText
	viewers  map[*viewer]struct{}
	activity time.Time // last output or input
	waiting  *Waiting  // set while the agent waits for input
	episodes int       // waiting episodes so far
	ended    bool

	inMu     sync.Mutex    // one writer to the master at a time
	pumpDone chan struct{} // closed when the output pump has stopped
	stop     chan struct{} // closed by end: the detector stops
	wg       sync.WaitGroup
}

// viewer is one connection to the socket: `grove attach` or `grove send`.
type viewer struct {
	conn *net.UnixConn
	out  chan []byte // encoded frames; closed when the viewer is dropped
}

// startTerminal opens a pseudo-terminal for cmd when spec asks for one,
// makes its slave side cmd's stdio and controlling terminal (own session:
// cmd's pid is its process group), and starts serving dir/TTYSocket. It
// returns nil, nil without spec.TTY.
func startTerminal(dir string, spec Spec, cmd *exec.Cmd) (*terminal, error) {
	if !spec.TTY {
		return nil, nil
	}
	master, slave, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("open pseudo-terminal: %w", err)
	}
	t := &terminal{dir: dir, master: master, slave: slave, slaveName: slave.Name(), log: os.Stdout, ring: newRing(RingSize),
		viewers: map[*viewer]struct{}{}, activity: time.Now(),
		pumpDone: make(chan struct{}), stop: make(chan struct{})}
	fail := func(err error) (*terminal, error) {
		master.Close()
		slave.Close()
		if t.raw != nil {
			t.raw.Close()
		}
		return nil, err
	}
	if err := pty.Setsize(master, &pty.Winsize{Rows: 24, Cols: 80}); err != nil {
		return fail(fmt.Errorf("set terminal size: %w", err))
	}
	t.raw, err = os.OpenFile(filepath.Join(dir, TTYRawFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fail(fmt.Errorf("open terminal recording: %w", err))
	}
	if err := t.listen(); err != nil {
		return fail(err)
	}
	grove.Failpoint("tty.before-agent") // a socket with nobody behind it, no agent
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// Own session with the terminal as its controlling tty (setsid makes
	// the agent its process group's leader, as Setpgid did); the rest of
	// the attributes (Pdeathsig...) stay as the caller set them.
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	cmd.SysProcAttr.Setpgid, cmd.SysProcAttr.Pgid = false, 0
	cmd.SysProcAttr.Setsid, cmd.SysProcAttr.Setctty, cmd.SysProcAttr.Ctty = true, true, 0
	if envValue(cmd.Env, "TERM") == "" {
		cmd.Env = append(cmd.Env, "TERM=xterm-256color")
	}
	return t, nil
}

// listen creates the socket, owner only.
func (t *terminal) listen() error {
	path := filepath.Join(t.dir, TTYSocket)
	_ = os.Remove(path) // never a live one: a run has one supervisor, ever
	addr, done, err := sockAddr(t.dir)
	if err != nil {
		return err
	}
	defer done()
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // removed by end, by its real path
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	t.ln = ln
	return nil
}

// started is called once the agent was started (err nil) or failed to
// start: the supervisor's copy of the slave is closed (the master reads
// EIO once the agent's side is all closed), and the pump, the socket and
// the waiting detector run. Until then the agent's output waits in the
// terminal's buffer, so the supervisor's own line comes first in the log.
func (t *terminal) started(err error) {
	if t == nil {
		return
	}
	t.slave.Close()
	if err != nil {
		t.master.Close()
		t.ln.Close()
		t.raw.Close()
		_ = os.Remove(filepath.Join(t.dir, TTYSocket))
		return
	}
	go t.pump()
	go t.accept()
	go t.detect()
}

// pump copies the agent's output to the recordings and the viewers until
// the terminal has no writer left.
func (t *terminal) pump() {
	defer close(t.pumpDone)
	buf := make([]byte, 32<<10)
	for {
		n, err := t.master.Read(buf)
		if n > 0 {
			t.output(buf[:n])
		}
		if err != nil {
			return // EIO: every slave descriptor is closed
		}
	}
}

func (t *terminal) output(p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.touchLocked()
	t.ring.Write(p)
	_, _ = t.raw.Write(p)
	if txt := t.text.Strip(nil, p); len(txt) > 0 {
		_, _ = t.log.Write(txt)
	}
	t.broadcastLocked(appendFrame(nil, FrameOutput, p))
}

// touchLocked records activity: output or input ends a wait for input.
func (t *terminal) touchLocked() {
	t.activity = time.Now()
	if t.waiting != nil {
		t.waiting = nil
		_ = os.Remove(filepath.Join(t.dir, WaitingFile))
	}
}

// broadcastLocked queues a frame for every viewer; one that is that far
// behind is dropped rather than slowing the agent down.
func (t *terminal) broadcastLocked(frame []byte) {
	for v := range t.viewers {
		select {
		case v.out <- frame:
		default:
			t.dropLocked(v)
		}
	}
}

func (t *terminal) dropLocked(v *viewer) {
	if _, ok := t.viewers[v]; ok {
		delete(t.viewers, v)
		close(v.out)
	}
}

func (t *terminal) accept() {
	for {
		c, err := t.ln.AcceptUnix()
		if err != nil {
			return // closed by end
		}
		if !ownerPeer(c) || confinedConn(c, filepath.Dir(t.dir)) {
			c.Close()
			continue
		}
		t.serve(c)
	}
}

// ownerPeer reports whether the peer runs as this process's user.
func ownerPeer(c *net.UnixConn) bool {
	cred, err := PeerCred(c)
	return err == nil && int(cred.Uid) == os.Geteuid()
}

// confinedConn reports whether c's peer belongs to a confined run of the
// home whose runs are in runsDir (see confinedPeer), or cannot be told.
func confinedConn(c *net.UnixConn, runsDir string) bool {
	cred, err := PeerCred(c)
	return err != nil || confinedPeer(int(cred.Pid), runsDir)
}

// PeerCred is the process at the other end of c (SO_PEERCRED): its pid,
// uid and gid when it connected.
func PeerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// serve registers a viewer: it is sent the recent screen, then everything
// that follows, and its input and window sizes go to the terminal.
func (t *terminal) serve(c *net.UnixConn) {
	v := &viewer{conn: c, out: make(chan []byte, 1024)}
	t.mu.Lock()
	if t.ended {
		t.mu.Unlock()
		c.Close()
		return
	}
	if screen := t.ring.Bytes(); len(screen) > 0 {
		if t.ring.full {
			// Start at a line, not inside an escape sequence cut in two.
			if i := bytes.IndexByte(screen[:min(len(screen), 4096)], '\n'); i >= 0 {
				screen = screen[i+1:]
			}
		}
		v.out <- appendFrame(nil, FrameOutput, screen)
	}
	t.viewers[v] = struct{}{}
	t.wg.Add(1) // under mu: end waits only once no viewer can be added
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		defer c.Close()
		for f := range v.out {
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(f); err != nil {
				t.mu.Lock()
				t.dropLocked(v)
				t.mu.Unlock()
				for range v.out { // drain until closed
				}
				return
			}
		}
	}()
	go t.read(v)
}

// read applies a viewer's frames until it disconnects.
func (t *terminal) read(v *viewer) {
	defer func() {
		t.mu.Lock()
		t.dropLocked(v)
		t.mu.Unlock()
	}()
	for {
		typ, p, err := ReadFrame(v.conn)
		if err != nil {
			return
		}
		switch typ {
		case FrameInput:
			t.mu.Lock()
			t.touchLocked()
			t.mu.Unlock()
			t.inMu.Lock()
			_, err = t.master.Write(p)
			t.inMu.Unlock()
			if err != nil {
				return
			}
		case FrameSize:
			if len(p) == 4 {
				rows, cols := binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])
				if rows > 0 && cols > 0 {
					// The kernel sends SIGWINCH to the foreground group.
					_ = pty.Setsize(t.master, &pty.Winsize{Rows: rows, Cols: cols})
				}
			}
		}
	}
}

// end is called after the agent and what was left of it are gone: the
// rest of the output is recorded, every viewer is told how the agent
// ended, and the socket and the waiting file are removed.
func (t *terminal) end(e Exit) {
	if t == nil {
		return
	}
	select {
	case <-t.pumpDone:
	case <-time.After(2 * time.Second):
		// A descendant that escaped the sweep still holds the terminal.
	}
	close(t.stop)
	t.ln.Close()
	_ = os.Remove(filepath.Join(t.dir, TTYSocket))
	e.EndedAt = time.Now()
	b, _ := json.Marshal(e)
	t.mu.Lock()
	t.ended = true
	if t.text.cr {
		_, _ = t.log.Write([]byte("\n"))
	}
	t.waiting = nil
	_ = os.Remove(filepath.Join(t.dir, WaitingFile))
	for v := range t.viewers {
		select {
		case v.out <- appendFrame(nil, FrameExit, b):
		default:
		}
		t.dropLocked(v)
	}
	t.mu.Unlock()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	t.master.Close()
	t.raw.Close()
}
