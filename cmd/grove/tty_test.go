package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/matryer/is"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/jobs/supervise"
)

// ttyAgent is an interactive program: it draws a line and redraws it in
// place (with an escape sequence), reports every window size it is given
// (SIGWINCH), asks a question on its terminal, and exits 3 on "yes", 4
// otherwise. dash's `read` returns 1 when a trapped signal interrupts it:
// it reads again.
const ttyAgent = `echo "$GROVE_TASK_ID" >> "$COUNTER"
trap 'echo "size: $(stty size)"' WINCH
printf '\033[1mworking\033[0m 1/2\r'
printf 'working 2/2\n'
printf 'Proceed? [yes/no] '
n=0
until read -r answer; do n=$((n+1)); [ $n -lt 50 ] || exit 9; done
echo "answer: $answer"
[ "$answer" = yes ] && exit 3
exit 4
`

// waitUntilWaiting runs `grove wait --until-waiting id`, which must
// succeed within a deadline.
func (h *harness) waitUntilWaiting(id string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), slow(30*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, "grove", "wait", "--until-waiting", id)
	cmd.Dir, cmd.Env = h.work, h.env
	if out, err := cmd.CombinedOutput(); err != nil {
		h.dumpState()
		h.t.Fatalf("grove wait --until-waiting %s: %v\n%s", id, err, out)
	}
}

// userTerm is a user's terminal: a pseudo-terminal the test owns, running
// `grove attach`.
type userTerm struct {
	t    *testing.T
	pty  *os.File
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{} // the reader saw the end of the terminal
}

func (h *harness) attachTerm(id string, rows, cols uint16) *userTerm {
	h.t.Helper()
	cmd := exec.Command("grove", "attach", id)
	cmd.Dir, cmd.Env = h.work, h.env
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: rows, Cols: cols})
	if err != nil {
		h.t.Fatal(err)
	}
	u := &userTerm{t: h.t, pty: f, cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(u.done)
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			u.mu.Lock()
			u.out.Write(buf[:n])
			u.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	h.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		f.Close()
	})
	return u
}

func (u *userTerm) screen() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.out.String()
}

// expect waits until the terminal has shown s.
func (u *userTerm) expect(s string) {
	u.t.Helper()
	deadline := time.Now().Add(slow(20 * time.Second))
	for time.Now().Before(deadline) {
		if strings.Contains(u.screen(), s) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	u.t.Fatalf("terminal never showed %q; it shows:\n%q", s, u.screen())
}

func (u *userTerm) typeText(s string) {
	u.t.Helper()
	if _, err := u.pty.Write([]byte(s)); err != nil {
		u.t.Fatal(err)
	}
}

// exit waits for `grove attach` to end and returns its exit code.
func (u *userTerm) exit() int {
	u.t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- u.cmd.Wait() }()
	select {
	case err := <-errc:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			u.t.Fatal(err)
		}
		select { // what it printed last
		case <-u.done:
		case <-time.After(slow(5 * time.Second)):
		}
		return u.cmd.ProcessState.ExitCode()
	case <-time.After(slow(20 * time.Second)):
		u.t.Fatalf("grove attach did not end; its terminal shows:\n%q", u.screen())
	}
	return -1
}

// One daemon, two interactive tasks. The first is driven through `grove
// attach` on a terminal the test owns: the question is seen, the window
// size is passed on at attach and on resize, the detach key detaches,
// re-attaching replays the screen, the daemon is SIGKILLed while a viewer
// is attached and after the restart a second viewer attaches and answers;
// both viewers see the agent's exit code, which the task passes through.
// The second is answered by a script: wait --until-waiting, ls/show say
// "running (waiting)", a waiting_input event, grove send. Each agent ran
// once; the log is plain text, the raw recording keeps the escapes.
func TestTTYAttachSendWait(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	counter := filepath.Join(h.work, "counter")
	agent := h.writeAgent("ask.sh", ttyAgent)
	h.startDaemon()
	id := h.mustGrove("submit", "--repo", h.repo, "--tty", "--env", "COUNTER="+counter, "--", agent)
	is.True(h.task(id).Options.TTY)

	u1 := h.attachTerm(id, 30, 100) // waits for the agent to start
	u1.expect("Proceed? [yes/no]")  // (its WINCH trap is set from now on)
	is.NoErr(pty.Setsize(u1.pty, &pty.Winsize{Rows: 40, Cols: 120}))
	u1.expect("size: 40 120") // the viewer's resize reaches the program
	u1.typeText("\x1d")       // Ctrl-]
	is.Equal(u1.exit(), 0)
	u1.expect("detached from task " + id)

	u2 := h.attachTerm(id, 30, 100)
	u2.expect("Proceed? [yes/no]") // the screen, replayed
	u2.expect("size: 40 120")      // printed while nobody but u1 watched
	u2.expect("size: 30 100")      // the new viewer's size, given at attach

	h.waitUntilWaiting(id) // it waits, with a viewer attached
	h.waitEvent(10*time.Second, id, jobs.EventWaitingInput)
	h.stopDaemon(syscall.SIGKILL)
	waitingRe := regexp.MustCompile(`(?m)^state\s+running \(waiting\)$`)
	is.True(waitingRe.MatchString(h.mustGrove("show", id))) // from the run dir, no daemon needed
	h.startDaemon()
	h.waitEvent(30*time.Second, id, "adopted")
	u3 := h.attachTerm(id, 30, 100)
	u3.expect("Proceed? [yes/no]")
	u3.typeText("y") // input (and its echo) ends the wait
	h.until(10*time.Second, "input clears waiting", func() bool {
		out, _, err := h.grove("show", id)
		return err == nil && !waitingRe.MatchString(out)
	})
	u3.typeText("es\r")
	for _, u := range []*userTerm{u2, u3} { // both viewers see the end
		is.Equal(u.exit(), 3)
		u.expect("answer: yes")
		u.expect("exit code 3]")
	}
	_, _, err := h.grove("wait", id)
	var ee *exec.ExitError
	is.True(errors.As(err, &ee) && ee.ExitCode() == 3) // the program's code

	log := h.mustGrove("logs", id)
	// Plain text: no escapes, the redrawn line on a line of its own (a WINCH
	// from the first attach may land between the program's lines).
	plain := regexp.MustCompile(`\nworking 1/2\n(size: \d+ \d+\n)*working 2/2\n(size: \d+ \d+\n)*Proceed\? \[yes/no\]`)
	if !plain.MatchString(log) {
		t.Errorf("the log is not the plain text expected:\n%q", log)
	}
	is.True(strings.Contains(log, "answer: yes"))
	is.True(!strings.Contains(log, "\x1b") && !strings.Contains(log, "\r"))
	raw := h.mustGrove("logs", "--raw", id) // as the program wrote it
	is.True(strings.Contains(raw, "\x1b[1mworking\x1b[0m 1/2\r"))
	_, err = os.Stat(filepath.Join(jobs.RunDir(h.home, id, 1), supervise.TTYSocket))
	is.True(os.IsNotExist(err)) // the socket goes with the agent
	_, errOut, err := h.grove("attach", id)
	is.True(err != nil && strings.Contains(errOut, "has ended (exited, exit code 3)"))

	// A script answers without attaching.
	id2 := h.mustGrove("submit", "--repo", h.repo, "--tty", "--env", "COUNTER="+counter, "--", agent)
	h.waitUntilWaiting(id2)
	is.True(regexp.MustCompile(`(?m)^` + id2 + `\s+running \(waiting\)`).MatchString(h.mustGrove("ls")))
	is.True(regexp.MustCompile(`(?m)^state\s+running \(waiting\)$`).MatchString(h.mustGrove("show", id2)))
	h.waitEvent(10*time.Second, id2, jobs.EventWaitingInput)
	h.mustGrove("send", id2, "no", "--enter")
	_, _, err = h.grove("wait", id2)
	is.True(errors.As(err, &ee) && ee.ExitCode() == 4)
	is.True(strings.Contains(h.mustGrove("logs", id2), "answer: no"))
	is.Equal(h.task(id2).State, grove.StateReview)

	is.Equal(countLines(t, counter), map[string]int{id: 1, id2: 1}) // each ran once
	evs, err := h.store().Events(context.Background(), id, 0)
	is.NoErr(err)
	first := 0
	for _, e := range evs {
		if e.Kind == jobs.EventWaitingInput && strings.HasSuffix(e.Message, "(#1)") {
			first++
		}
	}
	is.Equal(first, 1) // one event per episode, across the daemon's restart
	h.stopDaemon(syscall.SIGTERM)
}

// A supervisor that dies after creating its socket and before starting the
// agent: `grove attach` does not hang on the dead socket, it names the
// problem and exits 1; the task fails as lost; the agent never ran.
func TestTTYSupervisorDiesBeforeAgent(t *testing.T) {
	is := is.New(t)
	h := newHarness(t)
	h.env = append(h.env, grove.FailpointEnv+"=tty.before-agent") // reaches the supervisor through the daemon
	counter := filepath.Join(h.work, "counter")
	agent := h.writeAgent("ask.sh", ttyAgent)
	h.startDaemon()
	id := h.mustGrove("submit", "--repo", h.repo, "--tty", "--env", "COUNTER="+counter, "--", agent)
	u := h.attachTerm(id, 24, 80)
	is.Equal(u.exit(), 1)
	is.True(regexp.MustCompile(`supervisor of task \S+ is gone|task \S+ is failed|its supervisor ended without an exit status`).MatchString(u.screen()))
	h.until(30*time.Second, "task failed", func() bool { return h.task(id).State == grove.StateFailed })
	is.True(strings.Contains(h.task(id).Error, "agent lost"))
	_, err := os.Stat(counter)
	is.True(os.IsNotExist(err)) // never started
	h.stopDaemon(syscall.SIGTERM)
}

func TestParseDetachKey(t *testing.T) {
	is := is.New(t)
	for in, want := range map[string]byte{"ctrl-]": 0x1d, "ctrl-\\": 0x1c, "Ctrl-A": 0x01, "ctrl-x": 0x18, "ctrl-_": 0x1f} {
		got, err := parseDetachKey(in)
		is.NoErr(err)
		is.Equal(got, want)
	}
	for _, in := range []string{"]", "ctrl-", "ctrl-ab", "ctrl-1", "alt-x"} {
		_, err := parseDetachKey(in)
		is.True(errors.Is(err, grove.ErrUsage))
	}
}
