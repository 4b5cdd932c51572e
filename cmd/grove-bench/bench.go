package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// config is the command line.
type config struct {
	database    string // GROVE_DATABASE of every grove process ("" SQLite)
	files       int
	tasks       int
	concurrency int
	warm        int
	warmSettle  time.Duration
	warmProbes  int
	grove       string
	json        bool
	keep        bool
	rounds      int
	submits     int
	lsRuns      int
	poll        time.Duration
	timeout     time.Duration
	settle      time.Duration
	dir         string
	// setupSeconds > 0 commits a .grove.toml whose setup sleeps this long;
	// copyMB > 0 adds an ignored directory of that size to the main
	// checkout, copied into each worktree (see settings.go).
	setupSeconds float64
	copyMB       int
	sandbox      int
	hosts        int // --hosts: daemons on the one --database (hosts.go)
	// baselineApply: the baseline also lands each task's commit on the
	// main checkout (git cherry-pick), as grove's --apply auto does.
	baselineApply bool
}

const usageText = `grove-bench builds a synthetic repository, runs --tasks trivial agents
through a real 'grove serve' at --concurrency, does the same git work with
plain git commands as a baseline, and reports latencies, throughput and
grove/baseline ratios.

A grove task is run as a script that blocks on it would: one
'grove submit --wait --json' (its return is the task's end-to-end end,
applied; the single submits of submit_wall_* are plain 'grove submit'); a
phase's closes (worktrees removed) are awaited with 'grove ls --json'
every --poll, and its wall ends at the last task's "closed" event.

With --warm N, grove serve keeps N checked-out worktrees ready per
repository, and the run's grove start figures are with the pool on (also
saturated_warm_start_p50_ms; the tip moves after every applied task, so the
pool is mostly drained or behind). After the run, --warm-probes single
tasks measure the warm case itself: each is submitted once the pool holds N
ready worktrees at the tip (per 'grove doctor --json' and git), with
--apply manual so the tip stays put, then discarded and closed; their
submit → agent start is warm_start_p50_ms / warm_start_p99_ms.

usage: grove-bench [flags]

`

// parseFlags reads args; flag.ErrHelp means -h was asked for.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("grove-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fs.PrintDefaults()
	}
	fs.IntVar(&c.files, "files", 10000, "files in the synthetic repository")
	fs.StringVar(&c.database, "database", "", "run grove on this PostgreSQL database (postgres://…; an empty database: the bench lists every task in it), not SQLite in the bench home")
	fs.IntVar(&c.tasks, "tasks", 40, "tasks to run on each side")
	fs.IntVar(&c.concurrency, "concurrency", 4, "tasks in flight at once (and grove serve --max-agents)")
	fs.IntVar(&c.warm, "warm", 0, "pass --warm N to grove serve, then run --warm-probes for warm_start_p50_ms (0: off)")
	fs.DurationVar(&c.warmSettle, "warm-settle", 5*time.Second, "with --warm, time given to the daemon to fill its pool before submitting")
	fs.IntVar(&c.warmProbes, "warm-probes", 10, "with --warm, single tasks submitted one at a time, each once the pool is full at a steady tip")
	fs.StringVar(&c.grove, "grove", "", "the grove binary (default: grove next to this binary, then $PATH)")
	fs.BoolVar(&c.json, "json", false, "print one JSON object instead of the table")
	fs.BoolVar(&c.baselineApply, "baseline-apply", false, "the baseline also applies each task's commit to the main checkout (git cherry-pick, under its mutex), as grove does; the default baseline stops at the commit and its diff (with --warm, the baseline's moves of the tip also make the daemon refresh its pool beside it)")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary directory (repository, home, daemon log)")
	fs.IntVar(&c.rounds, "rounds", 2, "split the tasks into rounds alternating baseline and grove (ABBA), so background load hits both")
	fs.IntVar(&c.submits, "submits", 20, "sequential submits on an idle daemon for submit_wall_p50_ms")
	fs.IntVar(&c.lsRuns, "ls-runs", 10, "sequential `grove ls --json` runs for ls_wall_p50_ms")
	fs.DurationVar(&c.poll, "poll", 200*time.Millisecond, "pause between `grove ls --json` polls while waiting for a phase's tasks to close (when a task is applied is learnt from `grove submit --wait`)")
	fs.IntVar(&c.hosts, "hosts", 1, "with --database and N > 1: also run --tasks on host 1 alone, then split across N daemons (own homes, repositories and host names) on that database, for two hosts' throughput against one (hosts_*)")
	fs.IntVar(&c.sandbox, "sandbox-probes", 20, "single tasks on each side with the sandbox on and off, for the start p50 of each (0: skip)")
	fs.DurationVar(&c.timeout, "timeout", 20*time.Minute, "give up after this long")
	fs.DurationVar(&c.settle, "settle", 3*time.Minute, "a task not applied (or its worktree not removed) this long after it was submitted (or applied) fails the run, naming its id and state (0: only --timeout)")
	fs.Float64Var(&c.setupSeconds, "setup-seconds", 0, "commit a .grove.toml whose setup runs `sleep N` in each new worktree (0: none)")
	fs.IntVar(&c.copyMB, "copy-mb", 0, "put an ignored directory of N MB in the main checkout, copied into each worktree by .grove.toml copy, and time one copy (0: none)")
	fs.StringVar(&c.dir, "dir", "", "where to create the temporary directory (default $TMPDIR if set, else /dev/shm if it is a tmpfs with room, else /tmp)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	case c.files < 1:
		return c, errors.New("--files must be at least 1")
	case c.tasks < 1:
		return c, errors.New("--tasks must be at least 1")
	case c.concurrency < 1:
		return c, errors.New("--concurrency must be at least 1")
	case c.rounds < 1 || c.rounds > c.tasks:
		return c, errors.New("--rounds must be between 1 and --tasks")
	case c.hosts < 1 || c.hosts > 8:
		return c, errors.New("--hosts must be between 1 and 8")
	case c.hosts > 1 && c.database == "":
		return c, errors.New("--hosts needs --database: several hosts share one PostgreSQL database")
	case c.warm < 0 || c.warmProbes < 0 || c.submits < 0 || c.lsRuns < 0 || c.settle < 0:
		return c, errors.New("--warm, --warm-probes, --submits, --ls-runs and --settle must not be negative")
	}
	return c, nil
}

// run is the whole program: exit 0 ok, 1 failure, 2 usage error.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "grove-bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	rep, err := bench(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "grove-bench: %v\n", err)
		return 1
	}
	if cfg.json {
		err = writeJSON(stdout, rep)
	} else {
		err = writeTable(stdout, rep)
	}
	if err != nil {
		fmt.Fprintf(stderr, "grove-bench: %v\n", err)
		return 1
	}
	return 0
}

// findGrove is --grove, else grove next to this binary, else grove on PATH.
func findGrove(flagged string) (string, error) {
	if flagged != "" {
		return filepath.Abs(flagged)
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "grove")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", errors.New("no grove binary next to grove-bench; build it (make build) or pass --grove PATH")
}

// bench runs every phase and returns the report. Progress goes to progress.
func bench(ctx context.Context, cfg config, progress io.Writer) (rep report, err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(progress, "grove-bench: "+format+"\n", args...) }
	bin, err := findGrove(cfg.grove)
	if err != nil {
		return rep, err
	}
	r := runner{env: benchEnv()}
	if cfg.database != "" {
		r.env = append(r.env, "GROVE_DATABASE="+cfg.database)
	}
	gv, err := r.git(ctx, "", "version")
	if err != nil {
		return rep, err
	}
	rep = report{Files: cfg.files, Tasks: cfg.tasks, Concurrency: cfg.concurrency, Rounds: cfg.rounds, BaselineApplies: cfg.baselineApply, CPUs: runtime.NumCPU(), LoadStart: loadAvg(),
		GitVersion: strings.TrimPrefix(strings.TrimSpace(string(gv)), "git version "), Warm: cfg.warm, Database: "sqlite"}
	if cfg.database != "" {
		rep.Database = "postgres"
	}

	root, err := os.MkdirTemp(pickDir(cfg.dir, cfg.files, cfg.concurrency, cfg.tasks), "grove-bench-")
	if err != nil {
		return rep, err
	}
	root, _ = filepath.EvalSymlinks(root)
	rep.Dir, rep.FS = filepath.Dir(root), fsType(root)
	defer func() {
		if cfg.keep {
			logf("kept %s", root)
			return
		}
		if rerr := os.RemoveAll(root); rerr != nil {
			logf("cleanup: %v", rerr)
		}
	}()
	var (
		repo     = filepath.Join(root, "repo")
		tiny     = filepath.Join(root, "tiny")
		home     = filepath.Join(root, "home")
		wtRoot   = filepath.Join(root, "baseline-worktrees")
		marks    = filepath.Join(root, "marks")
		daemonLg = filepath.Join(root, "daemon.log")
	)
	for _, d := range []string{wtRoot, marks} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return rep, err
		}
	}

	logf("building a synthetic repository with %d files in %s (%s)", cfg.files, repo, rep.FS)
	t0 := time.Now()
	base, err := buildRepo(ctx, r, repo, cfg.files)
	if err != nil {
		return rep, fmt.Errorf("build repository: %w", err)
	}
	rep.RepoBuildS = time.Since(t0).Seconds()
	if cfg.setupSeconds > 0 || cfg.copyMB > 0 {
		if base, err = addSettings(ctx, r, repo, cfg, &rep); err != nil {
			return rep, fmt.Errorf("commit .grove.toml: %w", err)
		}
		logf("settings: setup %gs, copy %d MB (one copy: %.0f ms, %d of %d files cloned)", cfg.setupSeconds, cfg.copyMB,
			rep.CopyMs, rep.CopyCloned, rep.CopyFiles)
	}
	if _, err := buildRepo(ctx, r, tiny, 10); err != nil {
		return rep, fmt.Errorf("build small repository: %w", err)
	}
	logf("repository ready in %.1fs", rep.RepoBuildS)

	logf("starting grove serve --max-agents %d", cfg.concurrency)
	serveArgs := append([]string{"--allow-write", marks}, serveHostArgs(cfg.database, "1")...)
	d, err := startDaemon(ctx, r, bin, home, cfg.concurrency, cfg.warm, daemonLg, serveArgs...)
	if errors.Is(err, errFlagRejected) && cfg.warm > 0 {
		rep.WarmPool = "not available: grove serve rejected --warm"
		logf("warm pool not available (%v); continuing without --warm", err)
		d, err = startDaemon(ctx, r, bin, home, cfg.concurrency, 0, daemonLg, serveArgs...)
	} else if err == nil && cfg.warm > 0 {
		rep.WarmPool = "enabled"
	}
	if err != nil {
		return rep, err
	}
	defer func() {
		if serr := d.stop(); serr != nil && err == nil {
			err = serr
		}
		if err != nil {
			logf("daemon log (last lines of %s):\n%s", daemonLg, tail(daemonLg, 15))
		}
	}()
	g := groveCLI{r: r, bin: bin, home: home, settle: cfg.settle}
	cw := &closeWaiter{g: g, interval: cfg.poll, settle: cfg.settle}
	// If the daemon dies, the phases are canceled with that as the cause.
	phaseCtx, phaseCancel := context.WithCancelCause(ctx)
	defer phaseCancel(nil)
	go d.watch(phaseCtx, phaseCancel)

	if rep.WarmPool == "enabled" && cfg.warmSettle > 0 {
		logf("grove: giving the warm pool %s to fill", cfg.warmSettle)
		select {
		case <-time.After(cfg.warmSettle):
		case <-phaseCtx.Done():
			return rep, context.Cause(phaseCtx)
		}
	}
	// Rounds alternate the sides ABBA-style (B G, G B, B G, ...): load from
	// elsewhere on the box, or a drift over the run, falls on both.
	var baseRes, groveRes phaseResult
	baseCPU, groveCPU := cpuMeter{}, cpuMeter{pid: d.cmd.Process.Pid}
	for i := range cfg.rounds {
		lo, hi := cfg.tasks*i/cfg.rounds, cfg.tasks*(i+1)/cfg.rounds
		sides := []string{"baseline", "grove"}
		if i%2 == 1 {
			sides = []string{"grove", "baseline"}
		}
		for _, side := range sides {
			logf("round %d/%d: %s, %d tasks at concurrency %d", i+1, cfg.rounds, side, hi-lo, cfg.concurrency)
			if side == "baseline" {
				baseCPU.start()
				res, err := runBaseline(phaseCtx, r, repo, base, wtRoot, marks, lo, hi-lo, cfg.concurrency, cfg.baselineApply, progress)
				baseCPU.stop()
				if err != nil {
					return rep, withCause(phaseCtx, err)
				}
				baseRes.add(res)
				continue
			}
			groveCPU.start()
			res, err := runGrove(phaseCtx, g, cw, repo, marks, hi-lo, cfg.concurrency, progress, groveCPU.stop)
			if err != nil {
				return rep, withCause(phaseCtx, err)
			}
			groveRes.add(res)
		}
	}
	rep.fillCPU(baseCPU.total, groveCPU.total, len(baseRes.Tasks), len(groveRes.Tasks))
	stages, e2eEvent, err := stageTimes(phaseCtx, g, groveRes.Tasks)
	if err != nil {
		return rep, withCause(phaseCtx, err)
	}
	// The warm probes run before measureSubmits, so that the bench
	// repository is the only one with a pool while they count it.
	var probes probeResult
	var probeStages map[string][]time.Duration
	if rep.WarmPool == "enabled" && cfg.warmProbes > 0 {
		logf("grove: %d warm probes, one task at a time, each once the pool holds %d ready worktrees at the tip", cfg.warmProbes, cfg.warm)
		probes, err = runWarmProbes(phaseCtx, g, repo, marks, daemonLg, cfg.warm, cfg.warmProbes, warmProbeBudget, progress)
		if err != nil {
			return rep, withCause(phaseCtx, err)
		}
		if probeStages, _, err = stageTimes(phaseCtx, g, probes.Tasks); err != nil {
			return rep, withCause(phaseCtx, err)
		}
	}
	var submitWalls []time.Duration
	if cfg.submits > 0 {
		logf("grove: %d sequential submits on an idle daemon", cfg.submits)
		submitWalls, err = measureSubmits(phaseCtx, g, cw, tiny, marks, cfg.submits)
		if err != nil {
			return rep, withCause(phaseCtx, err)
		}
	}
	pollWalls := cw.walls
	lsWalls, lsTasks, err := measureLs(ctx, g, cfg.lsRuns)
	if err != nil {
		return rep, err
	}
	if cfg.hosts > 1 {
		warm := 0
		if rep.WarmPool == "enabled" {
			warm = cfg.warm
		}
		hr, err := runHosts(phaseCtx, cfg, r, bin, root, marks, warm, hostSide{d: d, g: g, cw: cw, repo: repo}, progress)
		if err != nil {
			return rep, withCause(phaseCtx, err)
		}
		rep.fillHosts(hr)
	}
	logf("stopping grove serve")
	if err := d.stop(); err != nil {
		return rep, err
	}
	rep.LoadEnd = loadAvg()
	rep.TrashBytes, rep.TrashEntries = diskUsage(filepath.Join(home, "trash"))
	rep.fill(baseRes, groveRes, e2eEvent, stages, submitWalls, lsWalls, lsTasks, pollWalls,
		worktreeCreateTimes(daemonLg), d.maxRSSMB())
	if rep.WarmPool == "enabled" {
		rep.fillWarm(probes, probeStages)
	}
	if cfg.sandbox > 0 {
		logf("grove: %d single tasks each with the sandbox on and off", cfg.sandbox)
		rep.fillSandbox(runSandboxProbes(ctx, r, bin, root, tiny, marks, cfg.sandbox, cfg.database, progress))
	}
	return rep, nil
}

// withCause prefers the reason phaseCtx was canceled (the daemon died)
// over the context error it caused.
func withCause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) && !errors.Is(c, context.DeadlineExceeded) {
		return c
	}
	return err
}

// loadAvg is the 1-minute load average (0 if unknown): other work on the
// box skews the figures.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscanf(string(b), "%f", &l)
	return l
}
