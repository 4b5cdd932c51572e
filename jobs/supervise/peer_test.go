package supervise

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"
)

// dialAndType is the test binary as a client of the terminal of run dir
// (GROVE_TEST_DIAL): it types "pwned" and prints "closed" when the
// supervisor hangs up on it, "open" when it is served.
func dialAndType(dir string) {
	conn, err := DialTTY(dir)
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer conn.Close()
	_ = WriteFrame(conn, FrameInput, []byte("pwned\r"))
	_ = conn.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	for {
		if _, _, err := ReadFrame(conn); err != nil {
			if errors.Is(err, io.EOF) || strings.Contains(err.Error(), "reset") {
				fmt.Println("closed")
			} else {
				fmt.Println("open")
			}
			return
		}
	}
}

// A confined agent cannot type into another run's terminal: the
// supervisor hangs up on a peer whose nearest supervisor recorded a
// Landlock sandbox, even through a process that calls itself
// `supervise <another run's dir>`; an unconfined agent's process, and this
// test (no supervisor above it), are served.
func TestConfinedAgentsCannotDriveATerminal(t *testing.T) {
	needLandlock(t, 1)
	is := is.New(t)
	runs := t.TempDir() // the home's runs: every run dir below
	is.True(!confinedPeer(os.Getpid(), runs))
	exe, err := os.Executable()
	is.NoErr(err)

	// The terminal: an agent that echoes the lines it is given.
	ttyDir := filepath.Join(runs, "tty-1")
	is.NoErr(os.MkdirAll(ttyDir, 0o700))
	ts := spec(t, `while read x; do echo "got $x"; [ "$x" = end ] && exit 0; done`)
	ts.TTY = true
	ended := make(chan Exit, 1)
	go func() { ended <- run(ttyDir, ts, make(chan os.Signal)) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) { // a poll with a deadline
		if _, err := os.Stat(filepath.Join(ttyDir, TTYSocket)); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the terminal's socket did not appear: %v", err)
		}
	}

	// typeFrom runs a supervised agent (confined or not) in run dir name
	// that runs script, whose client dials the terminal; it returns what
	// the client saw.
	typeFrom := func(name string, confined bool, script string) string {
		s := spec(t, script)
		s.Env = append(s.Env, "CLIENT="+exe, "GROVE_TEST_DIAL="+ttyDir)
		if confined {
			s.Sandbox = &Sandbox{Mode: SandboxRequired, Write: []string{s.WorkDir}, WriteFiles: []string{"/dev/null"}}
		}
		st, err := Start(exe, filepath.Join(runs, name), s)
		is.NoErr(err)
		<-st.Done
		b, err := os.ReadFile(filepath.Join(s.WorkDir, "result"))
		is.NoErr(err)
		return strings.TrimSpace(string(b))
	}
	direct := `"$CLIENT" > result`
	is.Equal(typeFrom("confined-1", true, direct), "closed")
	is.Equal(typeFrom("open-1", false, direct), "open")
	// A confined agent's process that calls itself a supervisor of another
	// (unconfined) run: walked past, refused.
	forged := `printf '"$CLIENT" > result\n' > supervise; /bin/sh supervise ` + filepath.Join(runs, "open-1")
	is.Equal(typeFrom("confined-2", true, forged), "closed")
	forgedElsewhere := `mkdir fake; printf '{"landlock":false}' > fake/sandbox.json; printf '"$CLIENT" > result\n' > supervise; /bin/sh supervise "$PWD/fake"`
	is.Equal(typeFrom("confined-3", true, forgedElsewhere), "closed")

	// Only the unconfined client's keystrokes reached the agent.
	conn, err := DialTTY(ttyDir)
	is.NoErr(err)
	defer conn.Close()
	is.NoErr(WriteFrame(conn, FrameInput, []byte("end\r")))
	var out strings.Builder
	for {
		typ, p, err := ReadFrame(conn)
		if err != nil || typ == FrameExit {
			break
		}
		if typ == FrameOutput {
			out.Write(p)
		}
	}
	<-ended
	b, _ := os.ReadFile(filepath.Join(ttyDir, LogFile))
	log := out.String() + string(b)
	is.Equal(strings.Count(log, "got pwned"), 1) // once: the unconfined client's
	is.True(strings.Contains(log, "got end"))
}
