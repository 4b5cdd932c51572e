package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// errFlagRejected is a `grove serve` that exited at once with a usage error
// naming a flag (it does not know --warm).
var errFlagRejected = errors.New("grove serve rejected a flag")

// daemon is a running `grove serve` on the bench home.
type daemon struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has been waited for
	waitErr error         // valid after exited
	stopped atomic.Bool   // stop was called: an exit is expected
	maxRSS  atomic.Int64  // kB, sampled from /proc/<pid>/status
}

// startDaemon runs `grove --home home serve --max-agents n [--warm w]` with
// its output in logPath and returns once it logs that it is serving.
// extra are more serve flags.
func startDaemon(ctx context.Context, r runner, bin, home string, maxAgents, warm int, logPath string, extra ...string) (*daemon, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	before := fileSize(logPath)
	args := []string{"--home", home, "serve", "--max-agents", strconv.Itoa(maxAgents)}
	if warm > 0 {
		args = append(args, "--warm", strconv.Itoa(warm))
	}
	args = append(args, extra...)
	// Not CommandContext: the daemon is stopped with SIGTERM, by stop.
	c := exec.Command(bin, args...)
	c.Env = r.env
	c.Stdout, c.Stderr = logf, logf
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("start grove serve: %w", err)
	}
	d := &daemon{cmd: c, logPath: logPath, exited: make(chan struct{})}
	go func() { d.waitErr = c.Wait(); close(d.exited) }()
	go d.sampleRSS()

	deadline := time.After(30 * time.Second)
	for {
		logText := readFrom(logPath, before)
		if strings.Contains(logText, "grove serving") {
			return d, nil
		}
		select {
		case <-d.exited:
			logText = readFrom(logPath, before)
			if strings.Contains(logText, "unknown flag") {
				return nil, fmt.Errorf("%w: %s", errFlagRejected, clipLines(logText, 2))
			}
			return nil, fmt.Errorf("grove serve exited at start (%v): %s", d.waitErr, clipLines(logText, 5))
		case <-deadline:
			d.stop()
			return nil, fmt.Errorf("grove serve did not report serving within 30s: %s", clipLines(logText, 5))
		case <-ctx.Done():
			d.stop()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits (KILL after 20 s). Safe to call twice.
func (d *daemon) stop() error {
	d.stopped.Store(true)
	select {
	case <-d.exited:
		return nil
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return nil
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return errors.New("grove serve did not stop within 20s of SIGTERM; killed")
	}
}

// watch cancels ctx (with cause) if the daemon exits before stop is called.
func (d *daemon) watch(ctx context.Context, cancel context.CancelCauseFunc) {
	select {
	case <-d.exited:
		if !d.stopped.Load() && ctx.Err() == nil {
			cancel(fmt.Errorf("grove serve exited unexpectedly (%v)", d.waitErr))
		}
	case <-ctx.Done():
	}
}

// sampleRSS records the daemon's peak VmRSS every 25 ms while it runs.
// (VmHWM would be exact, but VmRSS sampled is what the issue asks for.)
func (d *daemon) sampleRSS() {
	path := fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		if kb := statusKB(path, "VmRSS:"); kb > d.maxRSS.Load() {
			d.maxRSS.Store(kb)
		}
		select {
		case <-d.exited:
			return
		case <-tick.C:
		}
	}
}

// maxRSSMB is the peak sampled VmRSS in MiB.
func (d *daemon) maxRSSMB() float64 { return float64(d.maxRSS.Load()) / 1024 }

// statusKB reads a "Key:   N kB" line of a /proc status file; 0 if absent.
func statusKB(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// worktreeCreateTimes reads the daemon's JSON log for "worktree ready"
// records and returns their "took" durations (gitops.CreateWorktree alone,
// without queueing).
func worktreeCreateTimes(logPath string) []time.Duration {
	f, err := os.Open(logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []time.Duration
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"worktree ready"`)) {
			continue
		}
		var rec struct {
			Took json.RawMessage `json:"took"`
		}
		if json.Unmarshal(line, &rec) != nil || len(rec.Took) == 0 {
			continue
		}
		if d, ok := parseLogDuration(rec.Took); ok {
			out = append(out, d)
		}
	}
	return out
}

// parseLogDuration reads a slog duration: nanoseconds as a JSON number
// (slog's JSON handler) or a Go duration string.
func parseLogDuration(raw json.RawMessage) (time.Duration, bool) {
	var ns int64
	if json.Unmarshal(raw, &ns) == nil {
		return time.Duration(ns), true
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if d, err := time.ParseDuration(s); err == nil {
			return d, true
		}
	}
	return 0, false
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the file's content from offset on ("" on error).
func readFrom(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}

// tail is the last n lines of a file, for error reports.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
