package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/matryer/is"
	"golang.org/x/sys/unix"
)

// Every error gets a hint line, the system's errors one that says what to
// do about them (issue 15: a full disk, a read-only home had none).
func TestReportHints(t *testing.T) {
	for _, c := range []struct {
		err  error
		hint string
		code int
	}{
		{fmt.Errorf("write db: %w", &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC}), "the disk is full", 1},
		{errors.New("open store: database or disk is full (13)"), "the disk is full", 1},
		{fmt.Errorf("create home: %w", &os.PathError{Op: "mkdir", Path: "x", Err: syscall.EROFS}), "is read-only: pass --home DIR", 1},
		{errors.New("migrate: attempt to write a readonly database (8)"), "is read-only", 1},
		{fmt.Errorf("create home: %w", &os.PathError{Op: "mkdir", Path: "x", Err: syscall.ENOTDIR}), "point GROVE_HOME (or --home) at a directory", 1},
		{fmt.Errorf("open: %w", syscall.EACCES), "permission denied", 1},
		{errors.New("something else"), "grove doctor checks the setup", 1},
		{errors.New(`unknown command "x" for "grove"`), "see: grove --help", 2},
	} {
		var out bytes.Buffer
		a := &app{stderr: &out, home: "/h"}
		code := a.report(c.err)
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if code != c.code || len(lines) != 2 || !strings.HasPrefix(lines[0], "grove: ") ||
			!strings.HasPrefix(lines[1], "hint: ") || !strings.Contains(lines[1], c.hint) {
			t.Errorf("report(%v) = %d %q, want %d and a hint with %q", c.err, code, out.String(), c.code, c.hint)
		}
	}
}

// openPTY opens a pseudo-terminal: the terminal side for grove to write on
// and the side a test reads from.
func openPTY(t *testing.T) (term, reader *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err == nil {
		err = unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0)
	}
	if err != nil {
		m.Close()
		t.Skipf("no pseudo-terminal: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return s, m
}

// onTerminal runs grove with stdout and stderr on a pseudo-terminal and
// returns what it wrote there.
func onTerminal(t *testing.T, args ...string) string {
	t.Helper()
	term, reader := openPTY(t)
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(reader) // until EIO: the terminal side closed
		got <- string(b)
	}()
	run(context.Background(), args, strings.NewReader(""), term, term)
	term.Close()
	return <-got
}

// Colour on a terminal (states, errors), none with NO_COLOR or through a
// pipe.
func TestColourOnTerminal(t *testing.T) {
	is := is.New(t)
	t.Setenv("NO_COLOR", "")
	t.Setenv("CLICOLOR_FORCE", "")
	t.Setenv("TERM", "xterm")
	home := t.TempDir()
	repo := t.TempDir()
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"commit", "-q", "--allow-empty", "-m", "first"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_NAME=A", "GIT_AUTHOR_EMAIL=a@example.com", "GIT_COMMITTER_NAME=A", "GIT_COMMITTER_EMAIL=a@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	var out bytes.Buffer
	is.Equal(run(context.Background(), []string{"--home", home, "submit", "--repo", repo, "--", "true"}, nil, &out, &out), 0)

	errOut := onTerminal(t, "--home", home, "nosuchcommand")
	is.True(strings.Contains(errOut, "\x1b[31mgrove:\x1b[0m unknown command")) // red on a terminal
	is.True(strings.Contains(errOut, "\x1b[33mhint:\x1b[0m"))
	ls := onTerminal(t, "--home", home, "ls")
	is.True(strings.Contains(ls, "\x1b[34mqueued\x1b[0m")) // the state, coloured

	// A pipe gets none.
	out.Reset()
	run(context.Background(), []string{"--home", home, "ls"}, nil, &out, &out)
	is.True(strings.Contains(out.String(), "queued") && !strings.Contains(out.String(), "\x1b["))

	// NO_COLOR wins, on a terminal too.
	t.Setenv("NO_COLOR", "1")
	is.True(!strings.Contains(onTerminal(t, "--home", home, "nosuchcommand"), "\x1b["))
	is.True(!strings.Contains(onTerminal(t, "--home", home, "ls"), "\x1b["))
}

// shellQuote's output, read back by bash, is the same words (and one line).
func TestShellQuoteRoundTrip(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	argv := []string{"my-agent", "--prompt", "fix the flaky test", "it's", "line one\nline two", "tab\there",
		"", "$HOME", "`x`", "a\\b", "ünï cødé", "esc\x1b[31m", "bad\xffbyte", "--x=1,2", "*"}
	q := shellQuote(argv)
	if strings.ContainsAny(q, "\n\r\x1b") {
		t.Fatalf("quoted command spans lines or holds escapes: %q", q)
	}
	out, err := exec.Command("bash", "-c", `printf '%s\0' `+q).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if strings.Join(got, "|") != strings.Join(argv, "|") || len(got) != len(argv) {
		t.Errorf("bash read %q back as %q", q, got)
	}
	if q := shellQuote([]string{"sh", "-c", "echo hi"}); q != `sh -c 'echo hi'` {
		t.Errorf("shellQuote = %s", q)
	}
}
