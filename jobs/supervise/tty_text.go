package supervise

// ring keeps the last len(buf) bytes written to it: the recent screen a
// viewer is shown when it attaches.
type ring struct {
	buf  []byte
	next int  // where the next byte goes
	full bool // buf has wrapped at least once
}

func newRing(size int) *ring { return &ring{buf: make([]byte, size)} }

func (r *ring) Write(p []byte) {
	if len(p) >= len(r.buf) {
		copy(r.buf, p[len(p)-len(r.buf):])
		r.next, r.full = 0, true
		return
	}
	n := copy(r.buf[r.next:], p)
	if n < len(p) {
		copy(r.buf, p[n:])
		r.full = true
	}
	r.next = (r.next + len(p)) % len(r.buf)
	if r.next == 0 && len(p) > 0 {
		r.full = true
	}
}

// Bytes returns a copy of what the ring holds, oldest first.
func (r *ring) Bytes() []byte {
	if !r.full {
		return append([]byte(nil), r.buf[:r.next]...)
	}
	out := make([]byte, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}

// plainText turns a terminal's output stream into plain text for the log:
// escape sequences (CSI, OSC, DCS and the like, two- and three-byte
// escapes) and control characters other than tab and newline are dropped,
// CR LF becomes LF and a lone CR (a line redrawn in place) starts a new
// line. It keeps its state across writes, so a sequence split between two
// reads is still removed.
type plainText struct {
	state int
	cr    bool // a CR was seen and not yet resolved
}

const (
	ptText   = iota
	ptEsc    // after ESC
	ptCSI    // ESC [ ... final byte 0x40-0x7E
	ptString // OSC, DCS, SOS, PM, APC: until BEL or ESC \
	ptStrEsc // ESC inside a string
	ptIntermediate
)

// Strip returns the plain text of p, appended to out.
func (t *plainText) Strip(out, p []byte) []byte {
	for _, c := range p {
		switch t.state {
		case ptText:
			if t.cr {
				t.cr = false
				out = append(out, '\n')
				if c == '\n' {
					continue
				}
			}
			switch {
			case c == 0x1b:
				t.state = ptEsc
			case c == '\r':
				t.cr = true
			case c == '\n' || c == '\t' || c >= 0x20 && c != 0x7f:
				out = append(out, c)
			}
		case ptEsc:
			switch {
			case c == '[':
				t.state = ptCSI
			case c == ']' || c == 'P' || c == 'X' || c == '^' || c == '_':
				t.state = ptString
			case c >= 0x20 && c <= 0x2f: // ESC ( B and the like
				t.state = ptIntermediate
			default:
				t.state = ptText
			}
		case ptCSI:
			if c >= 0x40 && c <= 0x7e {
				t.state = ptText
			}
		case ptIntermediate:
			if c >= 0x30 && c <= 0x7e {
				t.state = ptText
			}
		case ptString:
			switch c {
			case 0x07:
				t.state = ptText
			case 0x1b:
				t.state = ptStrEsc
			}
		case ptStrEsc:
			if c == '\\' {
				t.state = ptText
			} else {
				t.state = ptString
			}
		}
	}
	return out
}
