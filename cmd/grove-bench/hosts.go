package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Several hosts on one PostgreSQL (--hosts N, with --database): the
// bench's daemon is host 1; N-1 more daemons start, each with its own
// home, its own copy of the synthetic repository (registered on its host
// by the first submit there) and its own host name. The same task count
// runs once on host 1 alone, then split across the N hosts, each host at
// --concurrency (its own --max-agents): hosts_throughput_ratio is N
// hosts' tasks/s ÷ one host's.

// serveHostArgs is the --host flag of a bench daemon named name: on a
// shared PostgreSQL database every daemon needs a host name of its own
// (grove serve refuses a second daemon under a name whose daemon is
// alive), unique to this run so a run right after another one on the same
// database is not refused either. Without --database it is nil.
func serveHostArgs(database, name string) []string {
	if database == "" {
		return nil
	}
	return []string{"--host", fmt.Sprintf("bench%d-%s", os.Getpid(), name)}
}

// hostSide is one host of the comparison: its daemon, its CLI and its
// repository.
type hostSide struct {
	d    *daemon
	g    groveCLI
	cw   *closeWaiter
	repo string
}

// hostsResult is what runHosts measured.
type hostsResult struct {
	One, Many       phaseResult
	OneCPU, ManyCPU cpuSplit
	PerHost         []int // tasks each host ran in the N-host phase
}

// runHosts starts hosts 2..cfg.hosts beside first (host 1, already
// serving), runs cfg.tasks tasks on first alone and the same number split
// across every host at once (in cfg.rounds rounds, the order alternating),
// and stops the daemons it started.
func runHosts(ctx context.Context, cfg config, r runner, bin, root, marks string, warm int, first hostSide, progress io.Writer) (res hostsResult, err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(progress, "grove-bench: "+format+"\n", args...) }
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sides := []hostSide{first}
	for i := 2; i <= cfg.hosts; i++ {
		side, err := startHost(ctx, cfg, r, bin, root, marks, warm, i)
		if err != nil {
			return res, err
		}
		defer func() {
			if serr := side.d.stop(); serr != nil && err == nil {
				err = serr
			}
			if err != nil {
				logf("host %d daemon log (last lines of %s):\n%s", i, side.d.logPath, tail(side.d.logPath, 15))
			}
		}()
		go side.d.watch(ctx, cancel)
		sides = append(sides, side)
	}

	// Rounds alternate the order (one, N; N, one; ...) as the main phase
	// alternates grove and baseline: load drifting over the run falls on both.
	for i := range cfg.rounds {
		n := cfg.tasks*(i+1)/cfg.rounds - cfg.tasks*i/cfg.rounds
		for _, many := range []bool{i%2 == 1, i%2 == 0} {
			if !many {
				logf("hosts: round %d/%d: %d tasks on host 1 alone, at concurrency %d", i+1, cfg.rounds, n, cfg.concurrency)
				p, c, err := runOneHost(ctx, first, marks, n, cfg.concurrency, progress)
				if err != nil {
					return res, withCause(ctx, fmt.Errorf("one host: %w", err))
				}
				res.One.add(p)
				res.OneCPU = res.OneCPU.plus(c)
				continue
			}
			logf("hosts: round %d/%d: %d tasks split across %d hosts, each at concurrency %d", i+1, cfg.rounds, n, len(sides), cfg.concurrency)
			p, c, per, err := runManyHosts(ctx, cancel, sides, marks, n, cfg.concurrency, progress)
			if err != nil {
				return res, withCause(ctx, err)
			}
			res.Many.add(p)
			res.ManyCPU = res.ManyCPU.plus(c)
			if res.PerHost == nil {
				res.PerHost = make([]int, len(per))
			}
			for k, m := range per {
				res.PerHost[k] += m
			}
		}
	}
	logf("hosts: one host %.2f tasks/s, %d hosts %.2f tasks/s", perSecond(len(res.One.Tasks), res.One.Wall),
		len(sides), perSecond(len(res.Many.Tasks), res.Many.Wall))
	return res, nil
}

// runOneHost runs n tasks on host 1 alone and measures its CPU.
func runOneHost(ctx context.Context, first hostSide, marks string, n, c int, progress io.Writer) (phaseResult, cpuSplit, error) {
	m := cpuMeter{pid: first.d.cmd.Process.Pid}
	m.start()
	p, err := runGrove(ctx, first.g, first.cw, first.repo, marks, n, c, progress, m.stop)
	return p, m.total, err
}

// runManyHosts runs n tasks split across sides at once, each at
// concurrency c, and measures every daemon's CPU (this process's children
// once). The phase's wall is the longest host's: they start together. A
// host's failure cancels the others (cancel).
func runManyHosts(ctx context.Context, cancel context.CancelCauseFunc, sides []hostSide, marks string, n, c int,
	progress io.Writer) (phaseResult, cpuSplit, []int, error) {
	meters := make([]cpuMeter, len(sides))
	for i, s := range sides {
		meters[i] = cpuMeter{pid: s.d.cmd.Process.Pid}
		meters[i].start()
	}
	progress = &lockedWriter{w: progress} // the hosts report at once
	results := make([]phaseResult, len(sides))
	errs := make([]error, len(sides))
	per := make([]int, len(sides))
	for i := range sides {
		per[i] = n*(i+1)/len(sides) - n*i/len(sides)
	}
	// The meters stop when the last host has seen its closes, before the
	// harness's per-task bookkeeping, as for one host (runOneHost).
	var left atomic.Int32
	for _, k := range per {
		if k > 0 {
			left.Add(1)
		}
	}
	stopMeters := sync.OnceFunc(func() {
		for i := range meters {
			meters[i].stop()
		}
	})
	hostClosed := func() {
		if left.Add(-1) == 0 {
			stopMeters()
		}
	}
	var wg sync.WaitGroup
	for i, s := range sides {
		if per[i] == 0 {
			continue // fewer tasks than hosts in this round
		}
		wg.Go(func() {
			results[i], errs[i] = runGrove(ctx, s.g, s.cw, s.repo, marks, per[i], c, progress, hostClosed)
			if errs[i] != nil {
				cancel(fmt.Errorf("host %d: %w", i+1, errs[i]))
			}
		})
	}
	wg.Wait()
	stopMeters() // no host had tasks
	var cpu cpuSplit
	for i := range meters {
		m := meters[i].total
		if i > 0 {
			m.Local = 0 // this process's children: counted once, by host 1's meter
		}
		cpu = cpu.plus(m)
	}
	for i, e := range errs {
		if e != nil {
			return phaseResult{}, cpu, per, fmt.Errorf("host %d of %d: %w", i+1, len(sides), e)
		}
	}
	var out phaseResult
	for _, p := range results {
		out.Tasks = append(out.Tasks, p.Tasks...)
		out.Wall = max(out.Wall, p.Wall)
	}
	return out, cpu, per, nil
}

// startHost builds host i's copy of the repository and starts its daemon
// (home-i, daemon-i.log under root).
func startHost(ctx context.Context, cfg config, r runner, bin, root, marks string, warm, i int) (hostSide, error) {
	n := strconv.Itoa(i)
	repo := filepath.Join(root, "repo-"+n)
	if _, err := buildRepo(ctx, r, repo, cfg.files); err != nil {
		return hostSide{}, fmt.Errorf("build repository of host %d: %w", i, err)
	}
	if cfg.setupSeconds > 0 || cfg.copyMB > 0 {
		var scratch report
		if _, err := addSettings(ctx, r, repo, cfg, &scratch); err != nil {
			return hostSide{}, fmt.Errorf("commit .grove.toml on host %d: %w", i, err)
		}
	}
	home := filepath.Join(root, "home-"+n)
	d, err := startDaemon(ctx, r, bin, home, cfg.concurrency, warm, filepath.Join(root, "daemon-"+n+".log"),
		append([]string{"--allow-write", marks}, serveHostArgs(cfg.database, n)...)...)
	if err != nil {
		return hostSide{}, fmt.Errorf("host %d: %w", i, err)
	}
	g := groveCLI{r: r, bin: bin, home: home, settle: cfg.settle}
	return hostSide{d: d, g: g, cw: &closeWaiter{g: g, interval: cfg.poll, settle: cfg.settle}, repo: repo}, nil
}

// fillHosts copies runHosts's figures into the report.
func (rep *report) fillHosts(h hostsResult) {
	rep.Hosts = len(h.PerHost)
	rep.HostsTasks = h.PerHost
	rep.OneHostTasksPerS = clean(perSecond(len(h.One.Tasks), h.One.Wall))
	rep.HostsTasksPerS = clean(perSecond(len(h.Many.Tasks), h.Many.Wall))
	rep.HostsThroughputRatio = clean(ratio(rep.HostsTasksPerS, rep.OneHostTasksPerS))
	rep.OneHostWallS, rep.HostsWallS = clean(h.One.Wall.Seconds()), clean(h.Many.Wall.Seconds())
	e2e := func(p phaseResult) float64 {
		ds := make([]time.Duration, len(p.Tasks))
		for i, t := range p.Tasks {
			ds[i] = t.E2E
		}
		return clean(summarize(ds).P50)
	}
	rep.OneHostE2EP50Ms, rep.HostsE2EP50Ms = e2e(h.One), e2e(h.Many)
	perTask := func(c cpuSplit, n int) float64 {
		if n == 0 {
			return 0
		}
		return clean(float64(c.total().Milliseconds()) / float64(n))
	}
	rep.OneHostCPUMsPerTask, rep.HostsCPUMsPerTask = perTask(h.OneCPU, len(h.One.Tasks)), perTask(h.ManyCPU, len(h.Many.Tasks))
}

// hostsRow is the table's lines for --hosts ("" without it).
func hostsRow(r report) string {
	if r.Hosts < 2 {
		return ""
	}
	split := make([]string, len(r.HostsTasks))
	for i, n := range r.HostsTasks {
		split[i] = strconv.Itoa(n)
	}
	return fmt.Sprintf("%-28s 1 host %.2f tasks/s (%d tasks in %.1f s, e2e p50 %.0f ms, CPU %.0f ms/task)\n"+
		"%-28s %d hosts %.2f tasks/s (%s tasks in %.1f s, e2e p50 %.0f ms, CPU %.0f ms/task): %.2fx one host\n",
		"hosts (one PostgreSQL)", r.OneHostTasksPerS, r.Tasks, r.OneHostWallS, r.OneHostE2EP50Ms, r.OneHostCPUMsPerTask,
		"", r.Hosts, r.HostsTasksPerS, strings.Join(split, "+"), r.HostsWallS, r.HostsE2EP50Ms, r.HostsCPUMsPerTask, r.HostsThroughputRatio)
}

// lockedWriter serialises writes to w from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
