package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// report is everything one run measured; it is the --json object. Times are
// milliseconds unless the name says otherwise; a figure that could not be
// measured is 0.
type report struct {
	Files       int    `json:"files"`
	Tasks       int    `json:"tasks"`
	Concurrency int    `json:"concurrency"`
	Rounds      int    `json:"rounds"`
	CPUs        int    `json:"cpus"`
	GitVersion  string `json:"git_version"`
	Database    string `json:"database"` // sqlite, or postgres (--database)
	Dir         string `json:"dir"`      // where the repository, worktrees and home were
	FS          string `json:"fs"`       // its filesystem
	Warm        int    `json:"warm,omitempty"`
	// BaselineApplies: --baseline-apply, the baseline cherry-picks each
	// task's commit onto the main checkout (its step "apply").
	BaselineApplies bool `json:"baseline_applies,omitempty"`
	// With --setup-seconds / --copy-mb: the setup each new worktree runs,
	// and one copy of the ignored directory timed (copy_cloned files of
	// copy_files were cloned copy-on-write; 0 on tmpfs and ext4).
	SetupSeconds float64 `json:"setup_seconds,omitempty"`
	CopyBytes    int64   `json:"copy_bytes,omitempty"`
	CopyFiles    int     `json:"copy_files,omitempty"`
	CopyCloned   int     `json:"copy_cloned,omitempty"`
	CopyMs       float64 `json:"copy_ms,omitempty"`
	WarmPool     string  `json:"warm_pool,omitempty"` // "enabled" or why not
	// 1-minute load average at the start and end: other work on the box
	// skews everything.
	LoadStart float64 `json:"load_avg_start"`
	LoadEnd   float64 `json:"load_avg_end"`

	// Ratios grove/baseline.
	ThroughputRatio float64 `json:"throughput_ratio"` // grove tasks/s ÷ baseline tasks/s
	StartRatioP50   float64 `json:"start_ratio_p50"`  // start_p50 ÷ baseline_create_p50
	E2ERatioP50     float64 `json:"e2e_ratio_p50"`    // e2e_p50 ÷ baseline_e2e_p50

	// CPU time per task (user+system, every process of the side: see
	// cpu.go) and its ratio baseline ÷ grove: the share of git's
	// efficiency grove keeps, which load elsewhere on the box barely moves
	// (throughput_ratio on an idle box approaches it from below).
	GroveCPUMsPerTask float64 `json:"grove_cpu_ms_per_task"`
	// grove's CPU per task split: the daemon itself, its children (git,
	// supervisors, agents), and the CLI calls of the harness (submit,
	// wait, the ls polls).
	GroveCPUSplitMsPerTask map[string]float64 `json:"grove_cpu_split_ms_per_task"`
	BaselineCPUMsPerTask   float64            `json:"baseline_cpu_ms_per_task"`
	CPURatio               float64            `json:"cpu_ratio"`

	GroveTasksPerS    float64 `json:"grove_tasks_per_s"`
	BaselineTasksPerS float64 `json:"baseline_tasks_per_s"`
	GroveWallS        float64 `json:"grove_wall_s"`    // first submit → last task's "closed" event (worktree removed)
	BaselineWallS     float64 `json:"baseline_wall_s"` // first task → last worktree removed

	// grove: `grove submit` started → the agent's first instruction, in the
	// saturated run (with --warm, the pool is on in it).
	StartP50Ms float64 `json:"start_p50_ms"`
	StartP99Ms float64 `json:"start_p99_ms"`
	// With --warm only. warm_start_*: the same span for the warm probes,
	// single tasks submitted with the pool full at a steady tip (the
	// issue's warm case); warm_probes of them ran, warm_probe_hits took a
	// pool worktree (daemon log "worktree ready (warm)"), warm_probe_note
	// says why fewer ran than asked; warm_stages_p50_ms are their audit
	// event spans. saturated_warm_start_p50_ms is start_p50_ms again, the
	// figure warm_start_p50_ms meant before the probes.
	WarmStartP50Ms          *float64           `json:"warm_start_p50_ms,omitempty"`
	WarmStartP99Ms          *float64           `json:"warm_start_p99_ms,omitempty"`
	WarmProbes              *int               `json:"warm_probes,omitempty"`
	WarmProbeHits           *int               `json:"warm_probe_hits,omitempty"`
	WarmProbeNote           string             `json:"warm_probe_note,omitempty"`
	WarmStagesP50Ms         map[string]float64 `json:"warm_stages_p50_ms,omitempty"`
	SaturatedWarmStartP50Ms *float64           `json:"saturated_warm_start_p50_ms,omitempty"`
	// baseline: task began → `git worktree add` done (mutex wait included),
	// and → the agent's first instruction.
	BaselineCreateP50Ms float64 `json:"baseline_create_p50_ms"`
	BaselineCreateP99Ms float64 `json:"baseline_create_p99_ms"`
	BaselineStartP50Ms  float64 `json:"baseline_start_p50_ms"`

	// grove: submit started → `grove wait ID` (started right after the
	// submit returned) returns with the task applied, as a script would see
	// it (grove wait polls the database every 50 ms in-process, plus its
	// process start); e2e_event_*: → the "applied" audit event (ms
	// resolution, no polling in it).
	E2EP50Ms      float64 `json:"e2e_p50_ms"`
	E2EP99Ms      float64 `json:"e2e_p99_ms"`
	E2EEventP50Ms float64 `json:"e2e_event_p50_ms"`
	E2EEventP99Ms float64 `json:"e2e_event_p99_ms"`
	// baseline: task began → worktree and branch removed.
	BaselineE2EP50Ms float64 `json:"baseline_e2e_p50_ms"`
	BaselineE2EP99Ms float64 `json:"baseline_e2e_p99_ms"`

	// grove stages (between audit events, p50/p99 over the tasks) and the
	// daemon's own "worktree ready took" (CreateWorktree without queueing).
	StagesP50Ms         map[string]float64 `json:"stages_p50_ms"`
	StagesP99Ms         map[string]float64 `json:"stages_p99_ms"`
	WorktreeCreateP50Ms float64            `json:"worktree_create_p50_ms"`
	// baseline steps (p50): create (mutex wait included), agent,
	// commit (add+commit+diff-tree), remove (worktree remove + branch -D,
	// mutex wait included); and `git worktree add` alone.
	BaselineStepsP50Ms       map[string]float64 `json:"baseline_steps_p50_ms"`
	BaselineWorktreeAddP50Ms float64            `json:"baseline_worktree_add_p50_ms"`

	SubmitWallP50Ms float64 `json:"submit_wall_p50_ms"` // sequential, idle daemon
	// Sandbox probes (sandbox.go): submit → agent start with the sandbox
	// on and off, and their difference.
	SandboxStartP50Ms    float64 `json:"sandbox_start_p50_ms,omitempty"`
	NoSandboxStartP50Ms  float64 `json:"nosandbox_start_p50_ms,omitempty"`
	SandboxStartDeltaMs  float64 `json:"sandbox_start_delta_ms,omitempty"`
	SandboxLaunchP50Ms   float64 `json:"sandbox_launch_p50_ms,omitempty"`
	NoSandboxLaunchP50Ms float64 `json:"nosandbox_launch_p50_ms,omitempty"`
	SandboxProbes        int     `json:"sandbox_probes,omitempty"`
	SandboxNote          string  `json:"sandbox_note,omitempty"`
	SubmitWallP99Ms      float64 `json:"submit_wall_p99_ms"`
	SubmitSamples        int     `json:"submit_samples"`
	LsWallP50Ms          float64 `json:"ls_wall_p50_ms"` // sequential, idle daemon, ls_tasks tasks in the DB
	LsTasks              int     `json:"ls_tasks"`
	LsPollP50Ms          float64 `json:"ls_poll_p50_ms"` // the `grove ls --json` polls awaiting closes (end of each grove phase, between the sequential submits)
	LsPolls              int     `json:"ls_polls"`
	DaemonRSSMB          float64 `json:"daemon_rss_mb"` // peak sampled VmRSS of grove serve
	RepoBuildS           float64 `json:"repo_build_s"`
	// The trash ($GROVE_HOME/trash) at the end of the run: every removed
	// worktree is kept there for --trash-keep; bytes allocated on disk.
	TrashBytes   int64 `json:"trash_bytes"`
	TrashEntries int   `json:"trash_entries"`

	// --hosts N (hosts.go): the same task count on host 1 alone, then
	// split across N daemons on the one PostgreSQL (hosts_tasks per host),
	// each host at --concurrency. hosts_throughput_ratio is N hosts'
	// tasks/s ÷ one host's; CPU per task counts every daemon of the phase.
	Hosts                int     `json:"hosts,omitempty"`
	HostsTasks           []int   `json:"hosts_tasks,omitempty"`
	OneHostTasksPerS     float64 `json:"one_host_tasks_per_s,omitempty"`
	HostsTasksPerS       float64 `json:"hosts_tasks_per_s,omitempty"`
	HostsThroughputRatio float64 `json:"hosts_throughput_ratio,omitempty"`
	OneHostWallS         float64 `json:"one_host_wall_s,omitempty"`
	HostsWallS           float64 `json:"hosts_wall_s,omitempty"`
	OneHostE2EP50Ms      float64 `json:"one_host_e2e_p50_ms,omitempty"`
	HostsE2EP50Ms        float64 `json:"hosts_e2e_p50_ms,omitempty"`
	OneHostCPUMsPerTask  float64 `json:"one_host_cpu_ms_per_task,omitempty"`
	HostsCPUMsPerTask    float64 `json:"hosts_cpu_ms_per_task,omitempty"`
}

// fillCPU sets the CPU figures from each side's total over its tasks.
func (rep *report) fillCPU(base, grove cpuSplit, baseTasks, groveTasks int) {
	if baseTasks == 0 || groveTasks == 0 || base.total() <= 0 || grove.total() <= 0 {
		return
	}
	per := func(d time.Duration, n int) float64 { return float64(d.Milliseconds()) / float64(n) }
	rep.BaselineCPUMsPerTask = per(base.total(), baseTasks)
	rep.GroveCPUMsPerTask = per(grove.total(), groveTasks)
	rep.GroveCPUSplitMsPerTask = map[string]float64{"daemon": per(grove.Daemon, groveTasks),
		"daemon_children": per(grove.Children, groveTasks), "cli": per(grove.Local, groveTasks)}
	rep.CPURatio = ratio(rep.BaselineCPUMsPerTask, rep.GroveCPUMsPerTask)
}

// fill computes the report's figures from the raw measurements.
func (rep *report) fill(base, grove phaseResult, e2eEvent []time.Duration, stages map[string][]time.Duration,
	submitWalls, lsWalls []time.Duration, lsTasks int, pollWalls, creates []time.Duration, rssMB float64) {
	pick := func(ts []taskTimes, f func(taskTimes) time.Duration) summary {
		ds := make([]time.Duration, len(ts))
		for i, t := range ts {
			ds[i] = f(t)
		}
		return summarize(ds)
	}
	gStart := pick(grove.Tasks, func(t taskTimes) time.Duration { return t.Start })
	gE2E := pick(grove.Tasks, func(t taskTimes) time.Duration { return t.E2E })
	bCreate := pick(base.Tasks, func(t taskTimes) time.Duration { return t.Create })
	bStart := pick(base.Tasks, func(t taskTimes) time.Duration { return t.Start })
	bE2E := pick(base.Tasks, func(t taskTimes) time.Duration { return t.E2E })
	ev := summarize(e2eEvent)

	rep.GroveTasksPerS = perSecond(len(grove.Tasks), grove.Wall)
	rep.BaselineTasksPerS = perSecond(len(base.Tasks), base.Wall)
	rep.GroveWallS = grove.Wall.Seconds()
	rep.BaselineWallS = base.Wall.Seconds()
	rep.ThroughputRatio = ratio(rep.GroveTasksPerS, rep.BaselineTasksPerS)
	rep.StartP50Ms, rep.StartP99Ms = gStart.P50, gStart.P99
	if rep.WarmPool == "enabled" {
		w := gStart.P50
		rep.SaturatedWarmStartP50Ms = &w
	}
	rep.BaselineCreateP50Ms, rep.BaselineCreateP99Ms = bCreate.P50, bCreate.P99
	rep.BaselineStartP50Ms = bStart.P50
	rep.StartRatioP50 = ratio(gStart.P50, bCreate.P50)
	rep.E2EP50Ms, rep.E2EP99Ms = gE2E.P50, gE2E.P99
	rep.E2EEventP50Ms, rep.E2EEventP99Ms = ev.P50, ev.P99
	rep.BaselineE2EP50Ms, rep.BaselineE2EP99Ms = bE2E.P50, bE2E.P99
	rep.E2ERatioP50 = ratio(gE2E.P50, bE2E.P50)
	rep.StagesP50Ms, rep.StagesP99Ms = map[string]float64{}, map[string]float64{}
	for _, s := range stageNames {
		sum := summarize(stages[s.name])
		rep.StagesP50Ms[s.name], rep.StagesP99Ms[s.name] = sum.P50, sum.P99
	}
	rep.WorktreeCreateP50Ms = summarize(creates).P50
	rep.BaselineStepsP50Ms = map[string]float64{}
	for _, st := range baselineSteps {
		if st.name == "apply" && !rep.BaselineApplies {
			continue
		}
		rep.BaselineStepsP50Ms[st.name] = pick(base.Tasks, st.get).P50
	}
	rep.BaselineWorktreeAddP50Ms = pick(base.Tasks, func(t taskTimes) time.Duration { return t.AddGit }).P50
	sub := summarize(submitWalls)
	rep.SubmitWallP50Ms, rep.SubmitWallP99Ms, rep.SubmitSamples = sub.P50, sub.P99, sub.N
	rep.LsWallP50Ms, rep.LsTasks = summarize(lsWalls).P50, lsTasks
	rep.LsPollP50Ms, rep.LsPolls = summarize(pollWalls).P50, len(pollWalls)
	rep.DaemonRSSMB = rssMB
}

// fillWarm computes the warm-probe figures (with --warm only).
func (rep *report) fillWarm(p probeResult, stages map[string][]time.Duration) {
	ds := make([]time.Duration, len(p.Tasks))
	for i, t := range p.Tasks {
		ds[i] = t.Start
	}
	sum := summarize(ds)
	n, hits := sum.N, p.Warm
	rep.WarmProbes, rep.WarmProbeHits, rep.WarmProbeNote = &n, &hits, p.Note
	if n > 0 {
		p50, p99 := sum.P50, sum.P99
		rep.WarmStartP50Ms, rep.WarmStartP99Ms = &p50, &p99
	}
	for _, s := range stageNames {
		if len(stages[s.name]) == 0 {
			continue // a discarded probe has no apply
		}
		if rep.WarmStagesP50Ms == nil {
			rep.WarmStagesP50Ms = map[string]float64{}
		}
		rep.WarmStagesP50Ms[s.name] = summarize(stages[s.name]).P50
	}
}

// baselineSteps are the baseline's steps in order.
var baselineSteps = []struct {
	name string
	get  func(taskTimes) time.Duration
}{
	{"create", func(t taskTimes) time.Duration { return t.Create }},
	{"agent", func(t taskTimes) time.Duration { return t.Agent }},
	{"commit", func(t taskTimes) time.Duration { return t.Commit }},
	{"apply", func(t taskTimes) time.Duration { return t.Apply }}, // --baseline-apply only
	{"remove", func(t taskTimes) time.Duration { return t.Remove }},
}

// deref is *p, or the zero value for nil.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// clean rounds to 0.01 and turns NaN/Inf (not measured) into 0, which JSON
// can carry.
func clean(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return math.Round(x*100) / 100
}

// writeJSON prints the report as one indented JSON object.
func writeJSON(w io.Writer, rep report) error {
	r := rep
	for _, p := range []*float64{&r.ThroughputRatio, &r.StartRatioP50, &r.E2ERatioP50, &r.GroveTasksPerS,
		&r.BaselineTasksPerS, &r.GroveWallS, &r.BaselineWallS, &r.StartP50Ms, &r.StartP99Ms,
		&r.BaselineCreateP50Ms, &r.BaselineCreateP99Ms, &r.BaselineStartP50Ms, &r.E2EP50Ms, &r.E2EP99Ms,
		&r.E2EEventP50Ms, &r.E2EEventP99Ms, &r.BaselineE2EP50Ms, &r.BaselineE2EP99Ms,
		&r.WorktreeCreateP50Ms, &r.SubmitWallP50Ms, &r.SubmitWallP99Ms, &r.LsWallP50Ms, &r.LsPollP50Ms,
		&r.DaemonRSSMB, &r.RepoBuildS, &r.BaselineWorktreeAddP50Ms,
		&r.GroveCPUMsPerTask, &r.BaselineCPUMsPerTask, &r.CPURatio} {
		*p = clean(*p)
	}
	for _, p := range []**float64{&r.WarmStartP50Ms, &r.WarmStartP99Ms, &r.SaturatedWarmStartP50Ms} {
		if *p != nil {
			v := clean(**p)
			*p = &v
		}
	}
	if r.WarmStagesP50Ms != nil {
		r.WarmStagesP50Ms = cleanMap(r.WarmStagesP50Ms)
	}
	r.StagesP50Ms, r.StagesP99Ms = cleanMap(r.StagesP50Ms), cleanMap(r.StagesP99Ms)
	r.BaselineStepsP50Ms = cleanMap(r.BaselineStepsP50Ms)
	r.GroveCPUSplitMsPerTask = cleanMap(r.GroveCPUSplitMsPerTask)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func cleanMap(m map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = clean(v)
	}
	return out
}

// writeTable prints the human summary.
func writeTable(w io.Writer, r report) error {
	f := func(x float64, prec int) string {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "-"
		}
		return fmt.Sprintf("%.*f", prec, x)
	}
	ms := func(x float64) string { return f(x, 0) }
	x := func(v float64) string {
		if s := f(v, 2); s != "-" {
			return s + "x"
		}
		return "-"
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("grove-bench: %d files, %d tasks in %d rounds, concurrency %d, git %s, on %s (%s)\n",
		r.Files, r.Tasks, r.Rounds, r.Concurrency, r.GitVersion, r.FS, r.Dir)
	p("%d CPUs, load average %.2f at start, %.2f at end\n", r.CPUs, r.LoadStart, r.LoadEnd)
	if r.Database != "" && r.Database != "sqlite" {
		p("database: %s\n", r.Database)
	}
	if r.WarmPool != "" {
		p("warm pool (--warm %d): %s\n", r.Warm, r.WarmPool)
	}
	if r.SetupSeconds > 0 || r.CopyBytes > 0 {
		p("settings: setup sleeps %gs per new worktree; copy of %.1f MB in %d files: %.0f ms (%d cloned copy-on-write)\n",
			r.SetupSeconds, float64(r.CopyBytes)/(1<<20), r.CopyFiles, r.CopyMs, r.CopyCloned)
	}
	p("\n%-28s %10s %10s %10s\n", "", "grove", "baseline", "ratio")
	row := func(label, g, bl, rt string) { p("%-28s %10s %10s %10s\n", label, g, bl, rt) }
	row("tasks/s", f(r.GroveTasksPerS, 2), f(r.BaselineTasksPerS, 2), x(r.ThroughputRatio))
	row("wall (s)", f(r.GroveWallS, 1), f(r.BaselineWallS, 1), "")
	row("CPU per task (ms)", ms(r.GroveCPUMsPerTask), ms(r.BaselineCPUMsPerTask), x(r.CPURatio))
	row("start p50 (ms)", ms(r.StartP50Ms), ms(r.BaselineCreateP50Ms), x(r.StartRatioP50))
	row("start p99 (ms)", ms(r.StartP99Ms), ms(r.BaselineCreateP99Ms), x(ratio(r.StartP99Ms, r.BaselineCreateP99Ms)))
	row("end-to-end p50 (ms)", ms(r.E2EP50Ms), ms(r.BaselineE2EP50Ms), x(r.E2ERatioP50))
	row("end-to-end p99 (ms)", ms(r.E2EP99Ms), ms(r.BaselineE2EP99Ms), x(ratio(r.E2EP99Ms, r.BaselineE2EP99Ms)))
	p("  start: grove = submit → agent runs; baseline = task begins → worktree added\n")
	if r.SaturatedWarmStartP50Ms != nil {
		p("  (with --warm, grove's start rows are this saturated run with the pool on; the tip moves after every task)\n")
	}
	p("  end-to-end: grove = submit → `grove wait` returns (applied); baseline = through branch -D\n")
	if r.BaselineApplies {
		p("  the baseline applies too (--baseline-apply): git cherry-pick of each task's commit onto the main checkout\n")
	}
	p("  CPU: user+system of every process of the side (grove: daemon, git, supervisors, agents, CLI calls); ratio = baseline ÷ grove\n")
	p("  wall: grove = first submit → last \"closed\" event (worktree removed); baseline = → last branch -D\n\n")

	if r.WarmProbes != nil {
		const wl = "%-43s "
		if r.WarmStartP50Ms != nil {
			p(wl+"%s / %s ms (%d probes, %d took a warm worktree)\n", "warm start p50/p99 (pool full, tip steady)",
				ms(*r.WarmStartP50Ms), ms(deref(r.WarmStartP99Ms)), *r.WarmProbes, deref(r.WarmProbeHits))
		} else {
			p(wl+"- (no probe ran)\n", "warm start p50/p99 (pool full, tip steady)")
		}
		if r.WarmProbeNote != "" {
			p(wl+"%s\n", "  warm probes", r.WarmProbeNote)
		}
		if len(r.WarmStagesP50Ms) > 0 {
			var ws []string
			for _, s := range stageNames {
				if v, ok := r.WarmStagesP50Ms[s.name]; ok {
					ws = append(ws, fmt.Sprintf("%s %s", s.name, ms(v)))
				}
			}
			p(wl+"%s\n", "  warm probe stages p50 (ms)", strings.Join(ws, ", "))
		}
		if r.SaturatedWarmStartP50Ms != nil {
			p(wl+"%s ms (= grove start p50 above)\n", "warm start p50 (saturated, tip moving)", ms(*r.SaturatedWarmStartP50Ms))
		}
	}
	p("%-28s %s / %s ms (submit → \"applied\" event, no polling)\n", "end-to-end p50/p99, events", ms(r.E2EEventP50Ms), ms(r.E2EEventP99Ms))
	var gs, bs []string
	for _, s := range stageNames {
		gs = append(gs, fmt.Sprintf("%s %s/%s", s.name, ms(r.StagesP50Ms[s.name]), ms(r.StagesP99Ms[s.name])))
	}
	for _, s := range baselineSteps {
		if v, ok := r.BaselineStepsP50Ms[s.name]; ok {
			bs = append(bs, fmt.Sprintf("%s %s", s.name, ms(v)))
		}
	}
	p("%-28s %s\n", "grove stages p50/p99 (ms)", strings.Join(gs, ", "))
	p("%-28s %s\n", "baseline steps p50 (ms)", strings.Join(bs, ", "))
	p("%-28s grove %s ms (CreateWorktree, from the daemon log); git worktree add %s ms\n", "worktree create p50",
		ms(r.WorktreeCreateP50Ms), ms(r.BaselineWorktreeAddP50Ms))
	p("%-28s %s / %s ms (%d sequential, idle daemon)\n", "submit wall p50/p99", ms(r.SubmitWallP50Ms), ms(r.SubmitWallP99Ms), r.SubmitSamples)
	p("%-28s %s ms idle (%d tasks); %s ms in the polls awaiting closes (%d polls)\n", "ls wall p50",
		f(r.LsWallP50Ms, 1), r.LsTasks, f(r.LsPollP50Ms, 1), r.LsPolls)
	p("%s", sandboxRow(r))
	p("%s", hostsRow(r))
	p("%-28s %s MB\n", "daemon peak RSS", f(r.DaemonRSSMB, 1))
	p("%-28s %s s\n", "repo build", f(r.RepoBuildS, 1))
	p("%-28s %.1f MB in %d entries (removed worktrees kept for --trash-keep)\n", "trash at the end", float64(r.TrashBytes)/(1<<20), r.TrashEntries)
	_, err := io.WriteString(w, b.String())
	return err
}
