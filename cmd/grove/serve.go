package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/riverqueue/river"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/jobs/supervise"
)

func (a *app) serveCmd() *cobra.Command {
	var (
		maxAgents int
		verbose   bool
		maint     maintenance
		opts      serveOptions
	)
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon in the foreground",
		Long: `serve works the task queue: it creates worktrees, runs agents under
supervisors, diffs, applies and closes. One daemon per home. SIGTERM or
SIGINT stops it within 10 s; running agents keep running and the next serve
adopts them.`,
		Example: `  grove serve
  grove serve --max-agents 8 --home /tmp/grove
  grove serve --reap-every '*/30 * * * *' --reap-grace 4h
  grove serve --reap-every off
  grove serve --backup-every 1h --backup-to /mnt/nas/grove.git`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			return a.serve(c.Context(), maxAgents, maint, opts, newLogger(a.stderr, level))
		},
	}
	c.Flags().IntVar(&maxAgents, "max-agents", 4, "agents that may run at once")
	c.Flags().StringVar(&a.host, "host", "", "this box's name among hosts sharing a --database (default $GROVE_HOST or the machine's name)")
	maint.flags(c)
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "debug logs")
	c.Flags().IntVar(&opts.warm, "warm", 0, "checked-out worktrees to keep ready per repository at its default branch's tip")
	c.Flags().IntVar(&opts.standbys, "standbys", 2, "supervisors kept started ahead of runs, so an agent does not wait for one (at most 4; --warm N keeps at least N; 0: none unless --warm)")
	c.Flags().DurationVar(&opts.idleTTL, "idle-ttl", 30*time.Minute, "stop the service of a session idle this long")
	c.Flags().IntVar(&opts.maxLive, "max-live-sessions", 8, "live sessions at most; the least recently used idle ones are evicted")
	c.Flags().StringVar(&opts.portRange, "port-range", "20000-20999", "ports leased to session services")
	c.Flags().DurationVar(&opts.trashKeep, "trash-keep", jobs.DefaultTrashKeep, "keep removed worktrees in $GROVE_HOME/trash this long (grove trash restore)")
	c.Flags().StringVar(&opts.trashMax, "trash-max", "10GiB", "bytes the trash may hold; the oldest entries older than an hour go first (0: no budget)")
	c.Flags().DurationVar(&opts.portLease, "port-lease", jobs.DefaultPortLease, "how long a session whose service is down (evicted, dead) keeps its port")
	c.Flags().DurationVar(&opts.readyTimeout, "ready-timeout", jobs.DefaultReadyTimeout, "how long a session's service has to listen on its port")
	opts.sandbox.flags(c)
	return c
}

// serveOptions are the daemon's lifecycle settings.
type serveOptions struct {
	warm      int
	standbys  int // supervisors started ahead (at least warm)
	idleTTL   time.Duration
	maxLive   int
	portRange string
	trashKeep time.Duration
	trashMax  string
	portLease time.Duration
	// readyTimeout: a service that does not listen on its port by then fails.
	readyTimeout time.Duration
	sandbox      sandboxServe
}

// apply copies the options onto the workers' dependencies.
func (o serveOptions) apply(d *jobs.Deps) error {
	var lo, hi int
	if _, err := fmt.Sscanf(o.portRange, "%d-%d", &lo, &hi); err != nil || lo < 1 || hi > 65535 || lo > hi {
		return grove.Userf(grove.ErrUsage, "write it as LOW-HIGH, e.g. --port-range 20000-20999", "bad --port-range %q", o.portRange)
	}
	if o.warm < 0 || o.standbys < 0 || o.maxLive < 0 {
		return grove.Userf(grove.ErrUsage, "see grove serve --help", "--warm, --standbys and --max-live-sessions must not be negative")
	}
	if o.standbys > jobs.MaxStandbys {
		return grove.Userf(grove.ErrUsage, "see grove serve --help", "--standbys is at most %d", jobs.MaxStandbys)
	}
	if o.idleTTL <= 0 {
		return grove.Userf(grove.ErrUsage, "see grove serve --help", "--idle-ttl must be positive")
	}
	if o.portLease < 0 || o.readyTimeout < 0 {
		return grove.Userf(grove.ErrUsage, "see grove serve --help", "--port-lease and --ready-timeout must not be negative")
	}
	d.Warm, d.IdleTTL, d.MaxLive, d.PortLo, d.PortHi = o.warm, o.idleTTL, o.maxLive, lo, hi
	d.PortLease, d.ReadyTimeout = o.portLease, o.readyTimeout
	if err := o.sandbox.apply(d); err != nil {
		return err
	}
	return o.applyTrash(d)
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
	// A daemon killed a moment ago may still have a child between fork and
	// exec holding a copy of the lock: while the recorded pid is dead, wait
	// a little for that copy to go.
	deadline := time.Now().Add(3 * time.Second)
	for {
		if ok, _ := grove.TryFlock(f, unix.LOCK_EX); ok {
			break
		}
		pid, _ := daemonPid(home)
		if (pid > 0 && unix.Kill(pid, 0) == nil) || time.Now().After(deadline) {
			f.Close()
			return nil, grove.Userf(grove.ErrDaemonRunning, "stop it first, or use another --home",
				"grove serve is already running on %s (pid %d)", home, pid)
		}
		time.Sleep(20 * time.Millisecond)
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
	if ok, _ := grove.TryFlock(f, unix.LOCK_SH); ok {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return 0, false // nobody holds it
	}
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	return pid, true
}

func (a *app) serve(ctx context.Context, maxAgents int, maint maintenance, opts serveOptions, log *slog.Logger) error {
	debug.SetGCPercent(100) // a long-lived process: the default (main raises it for CLI calls)
	home, err := a.homeDir()
	if err != nil {
		return err
	}
	periodic, err := maint.periodic()
	if err != nil {
		return err
	}
	a.home = home
	if stop, err := startCPUProfile(os.Getenv("GROVE_CPUPROFILE")); err != nil {
		return err
	} else {
		defer stop()
	}
	lock, err := lockDaemon(home)
	if err != nil {
		return err
	}
	defer lock.release()
	gitops.KeepRefUpdaters(true) // ref updates through kept git processes (gitops/refupdate.go)
	defer gitops.KeepRefUpdaters(false)
	if err := a.open(ctx); err != nil {
		return err
	}
	if err := a.claimHost(ctx); err != nil { // database.go: one daemon per host name
		return err
	}
	if err := a.recordHost(); err != nil {
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
	if err := opts.apply(deps); err != nil {
		return err
	}
	deps.KeepRefs, _ = maint.keepRefsDuration() // checked by maint.periodic
	maint.backup.record(home, log)
	// Removals, purges and restores a crash interrupted (gitops.SweepTrash
	// finishes them; it deletes nothing retention still keeps), before any
	// close runs again.
	if err := gitops.SweepTrash(deps.TrashDir()); err != nil {
		log.Warn("sweep trash", "dir", deps.TrashDir(), "err", err)
	}
	// Removals a crash interrupted (workspaces left `removing`), finished
	// or refused with their work kept, before any job runs.
	if n, err := jobs.ResumeRemovals(ctx, deps); err != nil {
		log.Warn("resume interrupted removals", "err", err)
	} else if n > 0 {
		log.Info("finished removals a crash interrupted", "worktrees", n)
	}
	client, err := jobs.NewServeClient(deps, jobs.ServeConfig{MaxAgents: maxAgents,
		ErrorLogger: riverLogger(log),
		Periodic:    periodic,
		ExtraWork:   func(w *river.Workers) { jobs.AddReapWorker(w, deps, maint.reapGrace); jobs.AddBackupWorker(w, deps) }})
	if err != nil {
		return err
	}
	if err := jobs.AddBackupQueue(client, a.st); err != nil {
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
	wakeCtx, stopWake := context.WithCancel(runCtx)
	defer stopWake()
	go func() { // CLI processes poke this socket after inserting a job
		if err := deps.ListenWake(wakeCtx, home); err != nil {
			log.Warn("no wake socket: jobs from the CLI wait for the next poll", "err", err)
		}
	}()
	if !a.st.Postgres() {
		go func() { // grove submit hands its request here (jobs/submit_socket.go)
			if err := deps.ListenSubmit(wakeCtx, home, client); err != nil {
				log.Warn("no submit socket: grove submit records tasks itself", "err", err)
			}
		}()
	}
	go jobs.WatchSessions(wakeCtx, deps, client)                 // session services: exits, restarts, activity, ports
	go deps.KeepStandbys(wakeCtx, max(opts.standbys, deps.Warm)) // supervisors started ahead of runs (jobs/standby.go)
	hostLost := make(chan error, 1)
	go jobs.Heartbeat(wakeCtx, deps, func(err error) { hostLost <- err }) // the host row grove doctor reads
	// Each host its own maintenance (River's periodic jobs are the leader's only).
	if a.st.Postgres() {
		go runLocalPeriodic(wakeCtx, client, periodic, log) // database.go
	}
	// A pool pass now: the pool's trust in its entries does not survive a
	// restart, and --warm may have changed.
	if _, err := client.Insert(runCtx, jobs.PoolFillArgs{}, nil); err != nil {
		log.Warn("first pool pass not queued", "err", err)
	}
	log.Info("grove serving", "home", home, "pid", os.Getpid(), "max_agents", maxAgents)
	var sig os.Signal
	var lost error
	select {
	case sig = <-sigs:
	case <-ctx.Done():
	case lost = <-hostLost:
		log.Error("another daemon took over this host while this one was silent: stopping", "host", a.st.Host(), "err", lost)
	}
	log.Info("stopping", "signal", fmt.Sprint(sig))
	stopWake()
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
	if lost != nil {
		return grove.Userf(grove.ErrDaemonRunning, "run this daemon under another name (grove serve --host NAME), or stop the other one first",
			"host %s is now served by another grove daemon; this one stopped (its agents keep running)", a.st.Host())
	}
	return nil
}

func (a *app) superviseCmd() *cobra.Command {
	var standby bool
	c := &cobra.Command{
		Use:    "supervise RUNDIR | supervise --standby",
		Short:  "Run one agent under supervision (internal)",
		Hidden: true,
		Args: func(c *cobra.Command, args []string) error {
			if standby {
				return exactArgs(0, "no run directory with --standby")(c, args)
			}
			return exactArgs(1, "a run directory")(c, args)
		},
		RunE: func(_ *cobra.Command, args []string) error {
			if standby {
				return supervise.StandbyMain()
			}
			return supervise.Main(args[0])
		},
	}
	c.Flags().BoolVar(&standby, strings.TrimPrefix(supervise.StandbyArg, "--"), false, "wait for a run handed over by the daemon")
	return c
}
