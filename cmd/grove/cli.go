package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/lmittmann/tint"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/store"
)

// Exit codes. `grove wait` passes the agent's own code through instead.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// app is what every subcommand shares.
type app struct {
	home   string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	code   int // exit code a command asks for besides errors (wait)

	st     *store.Store
	client *jobs.Client
	root   *cobra.Command
	// completing: this call answers the shell's completion (rootCmd then
	// sets the completion functions).
	completing bool

	database string // --database (see databaseURL)
	host     string // serve --host (see hostName)
}

// run is the whole CLI: parse args, run a command, map errors to exit codes
// with a one-line message and a hint.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	// Completion functions are set only for the shell's completion
	// requests (cobra's hidden __complete commands): setting them walks
	// every command's flags, a millisecond on every other call.
	a.completing = len(args) > 0 && strings.HasPrefix(args[0], cobra.ShellCompRequestCmd)
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if a.st != nil {
		a.st.Close()
	}
	if err != nil {
		return a.report(err)
	}
	return a.code
}

// report prints err as "grove: <msg>" plus "hint: <hint>" (every error
// has one) and picks the code: 2 for a wrong command line, 1 otherwise.
func (a *app) report(err error) int {
	code := exitFailure
	if isUsage(err) {
		code = exitUsage
	}
	h := grove.HintOf(err)
	if h == "" {
		h = a.hintFor(err, code)
	}
	p := newPainter(a.stderr)
	fmt.Fprintf(a.stderr, "%s %s\n", p.paint(colorRed, "grove:"), firstLine(err.Error()))
	fmt.Fprintf(a.stderr, "%s %s\n", p.paint(colorYellow, "hint:"), h)
	return code
}

// isUsage reports whether err is about the command line itself: an unknown
// command or flag, a bad flag value, a missing or extra argument.
func isUsage(err error) bool {
	var fe *flagError
	if errors.Is(err, grove.ErrBadRequest) {
		return false
	}
	return errors.Is(err, grove.ErrUsage) || errors.As(err, &fe) ||
		strings.HasPrefix(err.Error(), "unknown command ")
}

// hintFor is the hint of an error that carries none: what the system said
// (a full disk, a read-only or foreign home, a file in the way), or where
// to look next.
func (a *app) hintFor(err error, code int) string {
	msg := strings.ToLower(err.Error())
	where := "the home"
	if a.home != "" {
		where = a.home
	}
	switch {
	case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(msg, "disk is full") || strings.Contains(msg, "no space left"):
		return "the disk is full: free space on the filesystem of " + where + " (df -h shows it), then try again"
	case errors.Is(err, syscall.EROFS) || strings.Contains(msg, "read-only file system") || strings.Contains(msg, "readonly database"):
		return where + " is read-only: pass --home DIR or set GROVE_HOME to a writable directory"
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return "permission denied: check the owner and mode of " + where + " (grove doctor), or pass --home DIR"
	case errors.Is(err, syscall.ENOTDIR):
		return "a path on the way is a file, not a directory: point GROVE_HOME (or --home) at a directory"
	case code == exitUsage:
		return "see: grove --help"
	}
	return "grove doctor checks the setup; grove COMMAND --help shows how a command is used"
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// flagError marks cobra's own usage errors (unknown flag, bad value).
type flagError struct{ err error }

func (e *flagError) Error() string { return e.err.Error() }
func (e *flagError) Unwrap() error { return e.err }

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "grove",
		Short: "Run coding agents in isolated git worktrees, as durable jobs",
		Long: `grove runs coding agents (or any command) in isolated git worktrees on one
box, as durable jobs in an embedded SQLite queue. A script submits a task;
the daemon (grove serve) creates a worktree, runs the agent under a
supervisor, turns its work into a diff, and applies it when asked.`,
		Example: `  grove serve &
  id=$(grove submit --repo . -- my-agent --prompt "fix the tests")
  grove wait $id && grove diff $id && grove apply $id`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &flagError{err: grove.Userf(grove.ErrUsage, "see: "+c.CommandPath()+" --help", "%v", err)}
	})
	root.PersistentFlags().StringVar(&a.database, "database", "", databaseFlagHelp)
	root.PersistentFlags().StringVar(&a.home, "home", "", "grove's state directory (default $GROVE_HOME or ${XDG_STATE_HOME:-~/.local/state}/grove)")
	root.AddCommand(a.serveCmd(), a.superviseCmd(), a.submitCmd(), a.lsCmd(), a.showCmd(), a.logsCmd(),
		a.diffCmd(), a.applyCmd(), a.discardCmd(), a.cancelCmd(), a.closeCmd(), a.waitCmd(), a.retryCmd(),
		a.reapCmd(), a.restoreCmd(), a.doctorCmd(), a.backupCmd())
	root.AddCommand(a.sessionCmd())
	root.AddCommand(a.trashCmd())
	root.AddCommand(a.repoCmd())
	root.AddCommand(a.versionCmd())
	root.AddCommand(a.reassignCmd()) // reassign.go
	root.AddCommand(a.eventsCmd())
	root.AddCommand(a.serviceCmd())
	root.Version = readVersion().String()
	root.SetVersionTemplate("grove {{.Version}}\n")
	usageArgs(root)
	if a.completing {
		a.addCompletions(root)
	}
	a.root = root
	root.AddCommand(a.attachCmd(), a.sendCmd())
	return root
}

// usageArgs makes every argument check of c and its subcommands a usage
// error (exit 2) with the command's usage line as its hint.
func usageArgs(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(c *cobra.Command, args []string) error {
			err := check(c, args)
			var ue *grove.UserError
			if err == nil || errors.As(err, &ue) {
				return err
			}
			return grove.Userf(grove.ErrUsage, "usage: "+c.UseLine(), "%v", err)
		}
	}
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
}

// homeDir resolves --home, $GROVE_HOME, then the XDG default. An empty
// --home is refused (not read as "the default"), and so is a home that is
// not a directory.
func (a *app) homeDir() (string, error) {
	h := a.home
	if h == "" && a.root != nil && a.root.PersistentFlags().Changed("home") {
		return "", grove.Userf(grove.ErrUsage, "give a directory, or leave --home out for the default", "--home is empty")
	}
	if h == "" {
		h = os.Getenv("GROVE_HOME")
	}
	if h == "" {
		state := os.Getenv("XDG_STATE_HOME")
		if state == "" {
			uh, err := os.UserHomeDir()
			if err != nil {
				return "", grove.Userf(grove.ErrUsage, "set GROVE_HOME or pass --home", "cannot find a home directory: %v", err)
			}
			state = filepath.Join(uh, ".local", "state")
		}
		h = filepath.Join(state, "grove")
	}
	abs, err := filepath.Abs(h)
	if err != nil {
		return "", fmt.Errorf("resolve home %s: %w", h, err)
	}
	if fi, err := os.Stat(abs); err == nil && !fi.IsDir() {
		return "", grove.Userf(grove.ErrBadRequest, "point GROVE_HOME (or --home) at a directory; grove creates it if it is missing",
			"home %s is not a directory", abs)
	}
	return abs, nil
}

// open opens the store (and an insert-only River client) once per process.
func (a *app) open(ctx context.Context) error {
	if a.st != nil {
		return nil
	}
	home, err := a.homeDir()
	if err != nil {
		return err
	}
	a.home = home
	st, err := store.Open(ctx, home, store.Options{Database: a.databaseURL(), Host: a.hostName()})
	if err != nil {
		return err
	}
	a.st = st
	a.client, err = jobs.NewInsertClient(st)
	return err
}

func (a *app) intents() *jobs.Intents {
	return &jobs.Intents{Store: a.st, Client: a.client, Home: a.home}
}

// openTask opens the store and resolves a task id argument.
func (a *app) openTask(ctx context.Context, arg string) (string, error) {
	if err := a.open(ctx); err != nil {
		return "", err
	}
	return a.resolve(ctx, arg)
}

// resolve turns a user-typed id (or unique prefix) into a task id.
func (a *app) resolve(ctx context.Context, id string) (string, error) {
	return a.st.ResolveTaskID(ctx, id)
}

// printJSON prints v as JSON: indented for a person at a terminal, one
// compact line for a program (a pipe or a file), where indenting a list of
// 10,000 tasks would cost more than reading it.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	if isTerminal(a.stdout) {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

// newLogger logs through tint on a terminal and JSON otherwise (durations
// as text, e.g. "1.52ms").
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: readableDuration}))
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

// exactArgs is cobra.ExactArgs with a usage error that exits 2.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return grove.Userf(grove.ErrUsage, "usage: "+c.UseLine(), "%s needs %s", c.Name(), what)
		}
		return nil
	}
}
