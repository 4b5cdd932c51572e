package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/jobs/supervise"
)

func (a *app) serveCmd() *cobra.Command {
	var (
		maxAgents int
		verbose   bool
	)
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon in the foreground",
		Long: `serve works the task queue: it creates worktrees, runs agents under
supervisors, diffs, applies and closes. One daemon per home. SIGTERM or
SIGINT stops it within 10 s; running agents keep running and the next serve
adopts them.`,
		Example: `  grove serve
  grove serve --max-agents 8 --home /tmp/grove`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			return a.serve(c.Context(), maxAgents, newLogger(a.stderr, level))
		},
	}
	c.Flags().IntVar(&maxAgents, "max-agents", 4, "agents that may run at once")
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "debug logs")
	return c
}

// daemonLock holds $GROVE_HOME/daemon.lock for the daemon's lifetime.
type daemonLock struct{ f *os.File }

// lockDaemon takes the home's daemon lock or says which pid holds it.
func lockDaemon(home string) (*daemonLock, error) {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("create home %s: %w", home, err)
	}
	f, err := os.OpenFile(filepath.Join(home, "daemon.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open daemon lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		pid, _ := daemonPid(home)
		return nil, grove.Userf(grove.ErrDaemonRunning, "stop it first, or use another --home",
			"grove serve is already running on %s (pid %d)", home, pid)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &daemonLock{f: f}, nil
}

func (l *daemonLock) release() { l.f.Close() }

// daemonPid is the pid recorded by the daemon holding the lock, if any.
func daemonPid(home string) (int, bool) {
	f, err := os.OpenFile(filepath.Join(home, "daemon.lock"), os.O_RDWR, 0)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0, false // nobody holds it
	}
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	return pid, true
}

func (a *app) serve(ctx context.Context, maxAgents int, log *slog.Logger) error {
	home, err := a.homeDir()
	if err != nil {
		return err
	}
	a.home = home
	lock, err := lockDaemon(home)
	if err != nil {
		return err
	}
	defer lock.release()
	if err := a.open(ctx); err != nil {
		return err
	}
	// The lock proves no other daemon works these jobs: take them back now
	// instead of waiting for River's rescuer.
	if n, err := a.st.RescueRunningJobs(ctx); err != nil {
		return err
	} else if n > 0 {
		log.Info("took back jobs left running by a previous daemon", "jobs", n)
	}
	deps, err := jobs.NewDeps(a.st, home, log)
	if err != nil {
		return err
	}
	client, err := jobs.NewServeClient(deps, jobs.ServeConfig{MaxAgents: maxAgents,
		ErrorLogger: log.With("component", "river")})
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	if err := client.Start(runCtx); err != nil {
		return fmt.Errorf("start river: %w", err)
	}
	log.Info("grove serving", "home", home, "pid", os.Getpid(), "max_agents", maxAgents)
	var sig os.Signal
	select {
	case sig = <-sigs:
	case <-ctx.Done():
	}
	log.Info("stopping", "signal", fmt.Sprint(sig))
	// Agents keep running: their workers return at once and the next
	// daemon adopts them. Short git stages get a bounded time to finish.
	deps.Shutdown()
	stopCtx, stopCancel := context.WithTimeout(context.WithoutCancel(ctx), 6*time.Second)
	defer stopCancel()
	if err := client.Stop(stopCtx); err != nil {
		log.Warn("soft stop timed out; canceling stages", "err", err)
		hard, hardCancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer hardCancel()
		if err := client.StopAndCancel(hard); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("stop river: %w", err)
		}
	}
	log.Info("stopped")
	return nil
}

func (a *app) superviseCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "supervise RUNDIR",
		Short:  "Run one agent under supervision (internal)",
		Hidden: true,
		Args:   exactArgs(1, "a run directory"),
		RunE: func(_ *cobra.Command, args []string) error {
			return supervise.Main(args[0])
		},
	}
}
