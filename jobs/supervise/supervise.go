package supervise

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops/procscan"
)

// Spec describes one supervised run. It is written to DIR/spec.json.
type Spec struct {
	WorkDir string        `json:"work_dir"`
	Argv    []string      `json:"argv"`
	Env     []string      `json:"env"`     // the agent's whole environment
	Timeout time.Duration `json:"timeout"` // 0: none
	Grace   time.Duration `json:"grace"`   // TERM-to-KILL wait; 0: DefaultGrace
	// Sweep kills, after the agent ends, every process whose cwd is inside
	// WorkDir (an agent can setsid out of its group).
	Sweep bool `json:"sweep"`
	// TTY runs the agent on a pseudo-terminal the supervisor owns and
	// serves on DIR/tty.sock (tty.go).
	TTY bool `json:"tty,omitempty"`
	// Sandbox, when set, confines the agent and everything it starts
	// (Landlock, limits; see sandbox.go). Nil runs it unconfined.
	Sandbox *Sandbox `json:"sandbox,omitempty"`
}

// DefaultGrace is the TERM-to-KILL wait when a Spec sets none.
const DefaultGrace = 3 * time.Second

// Exit reasons.
const (
	ReasonExited   = "exited"    // the agent ended on its own (any code)
	ReasonTimeout  = "timeout"   // killed after Spec.Timeout
	ReasonCanceled = "canceled"  // the supervisor got TERM or INT
	ReasonNotFound = "not_found" // the agent binary does not exist
	ReasonStart    = "start"     // the agent could not be started
	ReasonLost     = "lost"      // the supervisor vanished without an exit file
)

// Exit is how a run ended.
type Exit struct {
	Code    int       `json:"code"`
	Reason  string    `json:"reason"`
	Message string    `json:"message,omitempty"`
	EndedAt time.Time `json:"ended_at"`
}

// File names inside a run directory.
const (
	SpecFile = "spec.json"
	LogFile  = "log"
	ExitFile = "exit"
	// LockFile is flocked from before the supervisor is exec'd until it
	// exits (the daemon takes the lock and hands the locked descriptor
	// down), so "locked" means "the supervisor is alive".
	LockFile = "lock"
	// ProcFile is written by the supervisor before it starts the agent: its
	// absence proves the agent never started.
	ProcFile = "proc.json"
	// AgentFile holds the agent's pid (its process group id), written
	// once it has started: the daemon looks for the group's survivors
	// before it declares a run lost.
	AgentFile = "agent.pid"
)

// Started is a supervisor launched by this process.
type Started struct {
	Proc
	// Done is closed when the supervisor process has exited (and been
	// reaped). Only a process that launched it gets one.
	Done <-chan struct{}
}

// Start writes spec to dir and launches `exe supervise dir` detached: own
// session, stdin /dev/null, stdout and stderr appended to dir/log. The
// supervisor survives this process. dir is created if needed.
func Start(exe, dir string, spec Spec) (Started, error) {
	lock, logf, err := prepareRun(dir, spec)
	if err != nil {
		return Started{}, err
	}
	defer lock.Close()
	defer logf.Close()
	p, done, err := launch(exe, dir, dir, logf, lock) // fd 3 in the supervisor: the lock travels with it
	if err != nil {
		return Started{}, err
	}
	return Started{Proc: p, Done: done}, nil
}

// launch starts `exe supervise arg` detached (own session, working
// directory dir, stdin /dev/null, stdout and stderr to out or /dev/null
// when nil, fd3 as descriptor 3) and returns its identity and a channel
// closed once it has exited and been reaped.
func launch(exe, arg, dir string, out, fd3 *os.File) (Proc, <-chan struct{}, error) {
	cmd := exec.Command(exe, "supervise", arg)
	cmd.Args[0] = "grove" // testscript and a renamed binary dispatch on argv[0]
	cmd.Dir = dir
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	cmd.Env = os.Environ()
	cmd.ExtraFiles = []*os.File{fd3}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return Proc{}, nil, fmt.Errorf("start supervisor: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p, err := Identify(cmd.Process.Pid)
	if err != nil {
		// It exited already; the exit file (or its absence) tells the rest.
		p = Proc{Pid: cmd.Process.Pid, BootID: BootID()}
	}
	return p, done, nil
}

// ReadExit reads dir's exit file; ok is false while there is none.
func ReadExit(dir string) (e Exit, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, ExitFile))
	if errors.Is(err, fs.ErrNotExist) {
		return e, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("read exit file: %w", err)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, false, fmt.Errorf("decode exit file %s: %w", dir, err)
	}
	return e, true, nil
}

// Wait returns how the run in dir ended: when its exit file appears, or, if
// the supervisor dies without one, an Exit with ReasonLost. done may be nil
// (an adopted run); liveness is polled every poll either way. It returns
// ctx.Err() if ctx ends first, leaving the run alone. onTick, if not nil, is
// called at each poll (the caller checks for a cancel request there).
func Wait(ctx context.Context, dir string, done <-chan struct{}, poll time.Duration, onTick func()) (Exit, error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		e, ok, err := ReadExit(dir)
		if err != nil || ok {
			return e, err
		}
		gone := false
		select {
		case <-ctx.Done():
			return Exit{}, ctx.Err()
		case <-done:
			gone = true
		case <-t.C:
			gone = !Alive(dir)
			if onTick != nil {
				onTick()
			}
		}
		if gone {
			e, ok, err := ReadExit(dir)
			if err != nil || ok {
				return e, err
			}
			return Exit{Code: -1, Reason: ReasonLost, Message: "supervisor ended without recording an exit", EndedAt: time.Now()}, nil
		}
	}
}

// Main is the body of `grove supervise DIR`. It runs the agent described by
// DIR/spec.json to its end and writes DIR/exit. It returns an error only if
// the exit file could not be written.
func Main(dir string) error {
	// fd 3 is the run lock handed down by Start; keep holding it, but do not
	// pass it on to the agent.
	syscall.CloseOnExec(3)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if _, ok, _ := ReadExit(dir); ok {
		return nil // already done: never run an agent twice
	}
	b, err := os.ReadFile(filepath.Join(dir, SpecFile))
	if err != nil {
		return finish(dir, Exit{Code: -1, Reason: ReasonStart, Message: "read spec: " + err.Error()})
	}
	var spec Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return finish(dir, Exit{Code: -1, Reason: ReasonStart, Message: "decode spec: " + err.Error()})
	}
	orphans, err := startReaper()
	if err != nil {
		fmt.Fprintf(os.Stderr, "grove: cannot become the subreaper of the agent's processes (%v); orphans go to PID 1\n", err)
	}
	defer orphans.close()
	return finish(dir, runAgent(dir, spec, sigs, orphans))
}

// runAgent runs spec's agent to its end. orphans, when not nil, is told the
// agent's pid (it reaps every other child of this process).
func runAgent(dir string, spec Spec, sigs <-chan os.Signal, orphans *reaper) Exit {
	if len(spec.Argv) == 0 {
		return Exit{Code: -1, Reason: ReasonStart, Message: "empty command"}
	}
	grace := spec.Grace
	if grace <= 0 {
		grace = DefaultGrace
	}
	path, err := findAgent(spec)
	if err != nil {
		return Exit{Code: 127, Reason: ReasonNotFound, Message: err.Error()}
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return Exit{Code: -1, Reason: ReasonStart, Message: err.Error()}
	}
	defer devnull.Close()
	self, err := Identify(os.Getpid())
	if err != nil {
		return Exit{Code: -1, Reason: ReasonStart, Message: err.Error()}
	}
	pb, _ := json.Marshal(self)
	if err := writeFileAtomic(filepath.Join(dir, ProcFile), pb); err != nil {
		return Exit{Code: -1, Reason: ReasonStart, Message: err.Error()}
	}
	conf, err := prepareSandbox(dir, spec.Sandbox)
	if err != nil {
		return Exit{Code: -1, Reason: ReasonStart, Message: "sandbox: " + err.Error()}
	}
	defer conf.done() // after cleanup: removes the run's cgroup
	cmd := &exec.Cmd{
		Path: path, Args: spec.Argv, Dir: spec.WorkDir, Env: spec.Env,
		Stdin: devnull, Stdout: os.Stdout, Stderr: os.Stderr,
		// The agent dies with its supervisor (kill -9 of `grove supervise`
		// must not leave it running without anyone to collect it).
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	term, err := startTerminal(dir, spec, cmd) // nil without spec.TTY
	if err != nil {
		conf.close()
		return Exit{Code: -1, Reason: ReasonStart, Message: err.Error()}
	}
	waited, err := startLocked(cmd, conf.enterFunc(cmd.SysProcAttr))
	conf.close()
	if err != nil {
		term.started(err)
		return Exit{Code: 126, Reason: ReasonStart, Message: fmt.Sprintf("start agent %s: %v", spec.Argv[0], err)}
	}
	pgid := cmd.Process.Pid
	orphans.setAgent(pgid)
	_ = writeFileAtomic(filepath.Join(dir, AgentFile), []byte(strconv.Itoa(pgid)))
	fmt.Fprintf(os.Stderr, "grove: agent started, pid %d\n", pgid)
	term.started(nil) // its output is logged from now on, after that line

	var timeout <-chan time.Time
	if spec.Timeout > 0 {
		tm := time.NewTimer(spec.Timeout)
		defer tm.Stop()
		timeout = tm.C
	}
	reason := ReasonExited
	var kill <-chan time.Time
	stop := func(why string) {
		if reason == ReasonExited {
			reason = why
		}
		_ = killGroup(pgid, syscall.SIGTERM)
		if kill == nil {
			kill = time.After(grace)
		}
	}
	var werr error
loop:
	for {
		select {
		case werr = <-waited:
			break loop
		case <-sigs:
			stop(ReasonCanceled)
		case <-timeout:
			stop(ReasonTimeout)
		case <-kill:
			_ = killGroup(pgid, syscall.SIGKILL)
		}
	}
	// The leader is gone: what is left of its group, and with Sweep anything
	// that escaped into the work dir, goes too.
	cleanup(pgid, spec, min(grace, 2*time.Second))

	code := cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	e := Exit{Code: code, Reason: reason}
	switch reason {
	case ReasonTimeout:
		e.Message = fmt.Sprintf("timed out after %s", spec.Timeout)
	case ReasonCanceled:
		e.Message = "canceled"
	default:
		if werr != nil && code < 0 {
			e.Message = werr.Error()
		}
	}
	term.end(e)
	return e
}

// startLocked starts cmd from a goroutine locked to its OS thread and
// returns a channel that receives cmd.Wait's result. The kernel sends
// PR_SET_PDEATHSIG when the thread that forked the child exits, not the
// process: the thread stays locked (so the Go runtime never retires it)
// until the child has been waited for.
//
// enter, if not nil, runs on that thread first (the sandbox confines the
// thread, so that only the child inherits it); the func it returns runs
// right after the fork.
func startLocked(cmd *exec.Cmd, enter func() (func(), error)) (<-chan error, error) {
	started := make(chan error, 1)
	waited := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		left := func() {}
		if enter != nil {
			var err error
			if left, err = enter(); err != nil {
				started <- err
				return
			}
		}
		err := cmd.Start()
		left()
		if err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return waited, nil
}

// cleanup terminates what is left of the agent's group, the processes that
// carry the agent's GROVE_TASK_ID (one that left its group and directory)
// and, with Sweep, the processes working inside the work dir: TERM, up to
// grace, then KILL.
//
// Only processes that started after this supervisor are looked at: an
// older one cannot be the agent's (a user's shell that went into the
// worktree is not killed), and skipping them costs one stat read each
// instead of a look at every descriptor and memory map on the box.
func cleanup(pgid int, spec Spec, grace time.Duration) {
	taskID := envValue(spec.Env, "GROVE_TASK_ID")
	since := sweepSince()
	left := func() []int {
		var pids []int
		if groupAlive(pgid) {
			pids = append(pids, -pgid)
		}
		dir := ""
		if spec.Sweep {
			dir = spec.WorkDir
		}
		if taskID != "" || dir != "" {
			in, _ := procscan.InOrWithEnvSince(dir, "GROVE_TASK_ID", taskID, since)
			pids = append(pids, in...)
		}
		return pids
	}
	pids := left()
	if len(pids) == 0 {
		return
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if len(left()) == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	// KILL until nothing is left (a process may fork while we look).
	for range 50 {
		pids = left()
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// findAgent resolves argv[0] the way a shell would, with the agent's PATH; a
// name with a slash is relative to the work dir.
func findAgent(spec Spec) (string, error) {
	name := spec.Argv[0]
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(spec.WorkDir, p)
		}
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("agent not found: %s", name)
		}
		return p, nil
	}
	for _, dir := range filepath.SplitList(envValue(spec.Env, "PATH")) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(spec.WorkDir, dir)
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("agent not found: %s", name)
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

func finish(dir string, e Exit) error {
	e.EndedAt = time.Now()
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode exit: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, ExitFile), b)
}

// writeFileAtomic writes path via path.tmp, fsync and rename, then syncs the
// directory, so a reader sees the whole file or none.
func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Alive reports whether the supervisor of the run in dir is running: its
// lock is held. A run dir without a lock file has no supervisor.
func Alive(dir string) bool { return grove.FlockHeld(filepath.Join(dir, LockFile)) }

// Status is what a run directory says about its run.
type Status int

// Run statuses, as found by Probe.
const (
	NotStarted Status = iota // no supervisor ever started the agent: safe to start one
	Running                  // the supervisor is alive: adopt it
	Ended                    // the exit file is there
	Lost                     // the agent started but its supervisor died without an exit file
)

// Probe tells what state the run in dir is in, so a caller can start it,
// adopt it, collect it, or declare it lost, and never start an agent twice.
func Probe(dir string) (Status, Exit, error) {
	e, ok, err := ReadExit(dir)
	if err != nil {
		return Lost, e, err
	}
	if ok {
		return Ended, e, nil
	}
	if Alive(dir) {
		return Running, e, nil
	}
	if e, ok, err := ReadExit(dir); err != nil || ok { // it may have ended just now
		return Ended, e, err
	}
	if _, err := os.Stat(filepath.Join(dir, ProcFile)); err == nil {
		return Lost, Exit{Code: -1, Reason: ReasonLost, Message: "supervisor ended without recording an exit (reboot or kill)"}, nil
	}
	return NotStarted, e, nil
}

// ReadProc returns the identity the supervisor of dir recorded.
func ReadProc(dir string) (Proc, error) {
	b, err := os.ReadFile(filepath.Join(dir, ProcFile))
	if err != nil {
		return Proc{}, fmt.Errorf("read supervisor identity: %w", err)
	}
	var p Proc
	if err := json.Unmarshal(b, &p); err != nil {
		return Proc{}, fmt.Errorf("decode supervisor identity: %w", err)
	}
	return p, nil
}
