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
}

// run is the whole CLI: parse args, run a command, map errors to exit codes
// with a one-line message and a hint.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
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

// report prints err as "grove: <msg>" plus "hint: <hint>" and picks the code.
func (a *app) report(err error) int {
	msg := err.Error()
	fmt.Fprintf(a.stderr, "grove: %s\n", firstLine(msg))
	if h := grove.HintOf(err); h != "" {
		fmt.Fprintf(a.stderr, "hint: %s\n", h)
	}
	var fe *flagError
	if errors.Is(err, grove.ErrUsage) || errors.As(err, &fe) {
		return exitUsage
	}
	return exitFailure
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
	root.PersistentFlags().StringVar(&a.home, "home", "", "grove's state directory (default $GROVE_HOME or ${XDG_STATE_HOME:-~/.local/state}/grove)")
	root.AddCommand(a.serveCmd(), a.superviseCmd(), a.submitCmd(), a.lsCmd(), a.showCmd(), a.logsCmd(),
		a.diffCmd(), a.applyCmd(), a.discardCmd(), a.cancelCmd(), a.closeCmd(), a.waitCmd(), a.retryCmd(),
		a.reapCmd(), a.restoreCmd(), a.doctorCmd())
	root.AddCommand(a.sessionCmd())
	root.AddCommand(a.trashCmd())
	root.AddCommand(a.attachCmd(), a.sendCmd())
	return root
}

// homeDir resolves --home, $GROVE_HOME, then the XDG default.
func (a *app) homeDir() (string, error) {
	h := a.home
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
	st, err := store.Open(ctx, home, store.Options{})
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

// newLogger logs through tint on a terminal and JSON otherwise.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly}))
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
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
