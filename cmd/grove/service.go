package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
)

// serviceName is the systemd unit grove installs.
const serviceName = "grove.service"

func (a *app) serviceCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "service",
		Short: "Run grove serve as a systemd service: install the unit, show its status",
		Long: `service writes a systemd unit that runs grove serve on this home (the
home --home or GROVE_HOME name, or the default), and reports whether it and
the daemon run. Flags after -- are passed to grove serve.`,
		Example: `  grove service install --user --dry-run        # print the unit
  grove service install --user && systemctl --user enable --now grove
  grove service install -- --max-agents 8 --warm 2   # a system unit (root)
  grove service status`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return grove.Userf(grove.ErrUsage, "see: grove service --help", "unknown service command %q", args[0])
			}
			return grove.Userf(grove.ErrUsage, "see: grove service --help", "grove service needs a subcommand: install or status")
		},
		RunE: func(*cobra.Command, []string) error { return nil },
	}
	c.AddCommand(a.serviceInstallCmd(), a.serviceStatusCmd())
	return c
}

// unitSpec is what a unit is made of.
type unitSpec struct {
	user     bool     // a user unit (systemctl --user), else a system one
	exe      string   // the grove binary, absolute
	home     string   // grove's home, absolute
	account  string   // User= of a system unit
	path     string   // PATH for the daemon (git, and agents found on it)
	serveArg []string // extra grove serve flags
}

// unitText renders the unit. KillMode=process: stopping or restarting the
// service signals grove serve alone, which exits leaving agents running
// under their supervisors for the next daemon to adopt (the default,
// control-group, would kill every agent with it).
func unitText(s unitSpec) string {
	var b strings.Builder
	argv := append([]string{s.exe, "--home", s.home, "serve"}, s.serveArg...)
	fmt.Fprintf(&b, "# Written by grove service install. grove serve on %s.\n", s.home)
	b.WriteString("[Unit]\nDescription=grove: coding agents in isolated git worktrees (grove serve)\n")
	b.WriteString("After=network.target\n\n[Service]\nType=simple\n")
	if !s.user && s.account != "" {
		fmt.Fprintf(&b, "User=%s\n", s.account)
	}
	fmt.Fprintf(&b, "Environment=%s\n", systemdQuote("GROVE_HOME="+s.home))
	if s.path != "" {
		fmt.Fprintf(&b, "Environment=%s\n", systemdQuote("PATH="+s.path))
	}
	fmt.Fprintf(&b, "ExecStart=%s\n", systemdArgv(argv))
	b.WriteString("KillMode=process\nTimeoutStopSec=30\nRestart=on-failure\nRestartSec=2\n\n[Install]\n")
	if s.user {
		b.WriteString("WantedBy=default.target\n")
	} else {
		b.WriteString("WantedBy=multi-user.target\n")
	}
	return b.String()
}

// systemdArgv renders an ExecStart command line: each word quoted as
// systemd reads it back.
func systemdArgv(argv []string) string {
	out := make([]string, len(argv))
	for i, w := range argv {
		out[i] = systemdQuote(w)
	}
	return strings.Join(out, " ")
}

// systemdQuote quotes one word for a unit file: double quotes around a
// word with a space or quote, backslash escapes inside, and % and $ doubled
// (systemd's specifiers and variables).
func systemdQuote(w string) string {
	w = strings.ReplaceAll(w, "%", "%%")
	w = strings.ReplaceAll(w, "$", "$$")
	if w != "" && !strings.ContainsAny(w, " \t\"'\\;") {
		return w
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`)
	return `"` + r.Replace(w) + `"`
}

// unitPath is where the unit goes: the user's systemd directory, or the
// system's.
func unitPath(userUnit bool) (string, error) {
	if !userUnit {
		return filepath.Join("/etc/systemd/system", serviceName), nil
	}
	cfg := os.Getenv("XDG_CONFIG_HOME")
	if cfg == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", grove.Userf(grove.ErrBadRequest, "set HOME or XDG_CONFIG_HOME", "cannot find your config directory: %v", err)
		}
		cfg = filepath.Join(h, ".config")
	}
	return filepath.Join(cfg, "systemd", "user", serviceName), nil
}

func (a *app) serviceInstallCmd() *cobra.Command {
	var userUnit, dryRun, force bool
	c := &cobra.Command{
		Use:   "install [--user] [--dry-run] [--force] [-- SERVE FLAGS...]",
		Short: "Write a systemd unit for grove serve on this home (or print it)",
		Long: `install writes grove.service: a user unit with --user
(~/.config/systemd/user), else a system unit (/etc/systemd/system, run as
you). It runs this grove binary as grove --home HOME serve, with your PATH,
restarts it on failure, and stops only the daemon (agents keep running and
are adopted by the next one). It reloads systemd and prints how to enable
it; it does not start it. An existing, different unit is kept unless
--force.`,
		Example: `  grove service install --user --dry-run
  grove service install --user && systemctl --user enable --now grove
  sudo grove --home /srv/grove service install -- --max-agents 8`,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) > 0 && c.ArgsLenAtDash() != 0 {
				return grove.Userf(grove.ErrUsage, "put grove serve's flags after --, e.g. grove service install -- --max-agents 8",
					"unexpected arguments before --")
			}
			spec, err := a.unitSpec(userUnit, args)
			if err != nil {
				return err
			}
			text := unitText(spec)
			if dryRun {
				_, err := fmt.Fprint(a.stdout, text)
				return err
			}
			path, err := unitPath(userUnit)
			if err != nil {
				return err
			}
			return a.writeUnit(c.Context(), path, text, userUnit, force)
		},
	}
	c.Flags().BoolVar(&userUnit, "user", false, "a user unit (systemctl --user), not a system one")
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print the unit instead of writing it")
	c.Flags().BoolVar(&force, "force", false, "replace an existing unit that differs")
	return c
}

// unitSpec gathers the unit's parts: this binary, the home, the account
// and PATH.
func (a *app) unitSpec(userUnit bool, serveArgs []string) (unitSpec, error) {
	home, err := a.homeDir()
	if err != nil {
		return unitSpec{}, err
	}
	exe, err := os.Executable()
	if err == nil {
		exe, err = filepath.EvalSymlinks(exe)
	}
	if err != nil {
		return unitSpec{}, fmt.Errorf("find the grove binary: %w", err)
	}
	s := unitSpec{user: userUnit, exe: exe, home: home, path: os.Getenv("PATH"), serveArg: serveArgs}
	if !userUnit {
		u, err := user.Current()
		if err != nil {
			return s, fmt.Errorf("find the current user: %w", err)
		}
		s.account = u.Username
	}
	return s, nil
}

// writeUnit writes text to path (atomically; an existing different unit
// only with force) and asks systemd to reload.
func (a *app) writeUnit(ctx context.Context, path, text string, userUnit, force bool) error {
	old, err := os.ReadFile(path)
	switch {
	case err == nil && string(old) == text:
		fmt.Fprintf(a.stdout, "%s is up to date\n", path)
		return nil
	case err == nil && !force:
		return grove.Userf(grove.ErrConflict, "compare with grove service install --dry-run, then pass --force to replace it",
			"%s exists and differs", path)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("read unit %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create unit directory: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write unit %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write unit %s: %w", path, err)
	}
	fmt.Fprintf(a.stdout, "wrote %s\n", path)
	sc := systemctlArgs(userUnit)
	if out, err := systemctl(ctx, userUnit, "daemon-reload"); err != nil {
		fmt.Fprintf(a.stderr, "could not reload systemd (%v%s); run: %s daemon-reload\n", err, clipOut(out), sc)
	}
	fmt.Fprintf(a.stdout, "start it now and at every boot with: %s enable --now grove\n", sc)
	if u, err := user.Current(); err == nil && userUnit {
		fmt.Fprintf(a.stdout, "to keep it running after you log out: loginctl enable-linger %s\n", u.Username)
	}
	return nil
}

func systemctlArgs(userUnit bool) string {
	if userUnit {
		return "systemctl --user"
	}
	return "systemctl"
}

// systemctl runs systemctl [--user] args with a short deadline.
func systemctl(ctx context.Context, userUnit bool, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if userUnit {
		args = append([]string{"--user"}, args...)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "systemctl", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

func clipOut(s string) string {
	if s == "" {
		return ""
	}
	return ": " + clip(oneLine(s), 100)
}

func (a *app) serviceStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the unit (user and system), systemd's view of it, and whether a daemon serves this home",
		Long: `status lists the grove units installed (user and system), what systemd says
of each (systemctl is-active), and whether a daemon serves this home (its
pid). It exits 0 when a daemon serves the home, 1 when none does.`,
		Example: "  grove service status\n  grove --home /srv/grove service status",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			home, err := a.homeDir()
			if err != nil {
				return err
			}
			pt := newPainter(a.stdout)
			for _, userUnit := range []bool{true, false} {
				path, err := unitPath(userUnit)
				if err != nil {
					continue
				}
				kind := map[bool]string{true: "user unit", false: "system unit"}[userUnit]
				if _, err := os.Stat(path); err != nil {
					fmt.Fprintf(a.stdout, "%-12s %s (not installed)\n", kind, path)
					continue
				}
				state, err := systemctl(c.Context(), userUnit, "is-active", "grove")
				if state == "" && err != nil {
					state = "unknown: " + err.Error()
				}
				color := colorYellow
				if state == "active" {
					color = colorGreen
				}
				fmt.Fprintf(a.stdout, "%-12s %s: %s\n", kind, path, pt.paint(color, oneLine(state)))
			}
			pid, up := daemonPid(home)
			if !up {
				fmt.Fprintf(a.stdout, "%-12s %s\n", "daemon", pt.paint(colorRed, "not running")+" on "+home)
				return grove.Userf(grove.ErrBadRequest, "start it: "+systemctlArgs(true)+" start grove, or grove serve",
					"no daemon serves %s", home)
			}
			fmt.Fprintf(a.stdout, "%-12s %s, pid %d, home %s\n", "daemon", pt.paint(colorGreen, "running"), pid, home)
			return nil
		},
	}
}
