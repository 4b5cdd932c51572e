package supervise

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
)

// Files of a terminal run (Spec.TTY) inside its run directory.
const (
	// TTYSocket is the unix socket the supervisor serves the terminal on
	// (mode 0600, and only peers with the supervisor's uid are served). It
	// is removed when the agent has ended.
	TTYSocket = "tty.sock"
	// TTYRawFile is the terminal's whole output as the agent wrote it,
	// escape sequences included (for replay); the run's log holds the same
	// output as plain text.
	TTYRawFile = "tty.raw"
	// WaitingFile exists while the agent waits for input (see waiting.go).
	WaitingFile = "waiting"
)

// Frame types of the terminal protocol. A frame is one type byte, a
// big-endian uint32 payload length, and the payload.
const (
	FrameOutput byte = 'o' // server to viewer: terminal output, raw
	FrameExit   byte = 'x' // server to viewer: the agent ended; payload is an Exit (JSON)
	FrameInput  byte = 'i' // viewer to server: bytes typed into the terminal
	FrameSize   byte = 'w' // viewer to server: window size, rows and cols as two big-endian uint16
)

// maxFrame bounds a payload (a peer cannot make the other side allocate more).
const maxFrame = 1 << 20

// WriteFrame writes one frame to w.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	_, err := w.Write(appendFrame(nil, typ, payload))
	return err
}

func appendFrame(b []byte, typ byte, payload []byte) []byte {
	b = append(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// ReadFrame reads one frame from r.
func ReadFrame(r io.Reader) (typ byte, payload []byte, err error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("terminal frame of %d bytes: too large", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("read terminal frame: %w", err)
	}
	return h[0], payload, nil
}

// SizePayload encodes a window size for a FrameSize frame.
func SizePayload(rows, cols uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, rows)
	return binary.BigEndian.AppendUint16(b, cols)
}

// ExitPayload decodes a FrameExit payload.
func ExitPayload(b []byte) (Exit, error) {
	var e Exit
	err := json.Unmarshal(b, &e)
	return e, err
}

// ErrNoTerminal means the run has no terminal to attach to: it was not
// started with a terminal, or it has ended.
var ErrNoTerminal = errors.New("no terminal")

// DialTTY connects to the terminal of the run in dir. It returns an error
// wrapping ErrNoTerminal when there is no socket (not a terminal run, or
// the agent ended) or nobody serves it (the supervisor is gone).
func DialTTY(dir string) (*net.UnixConn, error) {
	addr, done, err := sockAddr(dir)
	if err != nil {
		return nil, err
	}
	defer done()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: addr, Net: "unix"})
	if err != nil {
		if _, serr := os.Stat(filepath.Join(dir, TTYSocket)); serr != nil {
			return nil, fmt.Errorf("%w: %s has no %s", ErrNoTerminal, dir, TTYSocket)
		}
		return nil, fmt.Errorf("%w: connect to %s: %v", ErrNoTerminal, filepath.Join(dir, TTYSocket), err)
	}
	return c, nil
}

// sockAddr is the address of dir's socket. A unix socket path holds at most
// 107 bytes; a longer one is reached through /proc/self/fd/N (the open
// directory), which the kernel resolves like any path. done closes it.
func sockAddr(dir string) (addr string, done func(), err error) {
	p := filepath.Join(dir, TTYSocket)
	if len(p) < 100 {
		return p, func() {}, nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return "", nil, fmt.Errorf("open run dir: %w", err)
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", d.Fd(), TTYSocket), func() { d.Close() }, nil
}
