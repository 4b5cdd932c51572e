package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// report is everything one run measured; it is the --json object. Times are
// milliseconds unless the name says otherwise; a figure that could not be
// measured is 0.
type report struct {
	Files       int    `json:"files"`
	Tasks       int    `json:"tasks"`
	Concurrency int    `json:"concurrency"`
	CPUs        int    `json:"cpus"`
	GitVersion  string `json:"git_version"`
	Warm        int    `json:"warm,omitempty"`
	WarmPool    string `json:"warm_pool,omitempty"` // "enabled" or why not

	// Ratios grove/baseline.
	ThroughputRatio float64 `json:"throughput_ratio"` // grove tasks/s ÷ baseline tasks/s
	StartRatioP50   float64 `json:"start_ratio_p50"`  // start_p50 ÷ baseline_create_p50
	E2ERatioP50     float64 `json:"e2e_ratio_p50"`    // e2e_p50 ÷ baseline_e2e_p50

	GroveTasksPerS    float64 `json:"grove_tasks_per_s"`
	BaselineTasksPerS float64 `json:"baseline_tasks_per_s"`
	GroveWallS        float64 `json:"grove_wall_s"`    // first submit → last task closed
	BaselineWallS     float64 `json:"baseline_wall_s"` // first task → last worktree removed

	// grove: `grove submit` started → the agent's first instruction.
	StartP50Ms     float64  `json:"start_p50_ms"`
	StartP99Ms     float64  `json:"start_p99_ms"`
	WarmStartP50Ms *float64 `json:"warm_start_p50_ms,omitempty"` // start_p50 with the warm pool on
	// baseline: task began → `git worktree add` done (mutex wait included),
	// and → the agent's first instruction.
	BaselineCreateP50Ms float64 `json:"baseline_create_p50_ms"`
	BaselineCreateP99Ms float64 `json:"baseline_create_p99_ms"`
	BaselineStartP50Ms  float64 `json:"baseline_start_p50_ms"`

	// grove: submit started → first `grove ls` showing applied/closed
	// (resolution: poll interval + one ls); e2e_event_*: → the "applied"
	// audit event (ms resolution, no polling in it).
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

	SubmitWallP50Ms float64 `json:"submit_wall_p50_ms"` // sequential, idle daemon
	SubmitWallP99Ms float64 `json:"submit_wall_p99_ms"`
	SubmitSamples   int     `json:"submit_samples"`
	LsWallP50Ms     float64 `json:"ls_wall_p50_ms"` // sequential, idle daemon, ls_tasks tasks in the DB
	LsTasks         int     `json:"ls_tasks"`
	LsPollP50Ms     float64 `json:"ls_poll_p50_ms"` // the poller's ls during the grove phase (under load)
	LsPolls         int     `json:"ls_polls"`
	DaemonRSSMB     float64 `json:"daemon_rss_mb"` // peak sampled VmRSS of grove serve
	RepoBuildS      float64 `json:"repo_build_s"`
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
		rep.WarmStartP50Ms = &w
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
	sub := summarize(submitWalls)
	rep.SubmitWallP50Ms, rep.SubmitWallP99Ms, rep.SubmitSamples = sub.P50, sub.P99, sub.N
	rep.LsWallP50Ms, rep.LsTasks = summarize(lsWalls).P50, lsTasks
	rep.LsPollP50Ms, rep.LsPolls = summarize(pollWalls).P50, len(pollWalls)
	rep.DaemonRSSMB = rssMB
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
		&r.DaemonRSSMB, &r.RepoBuildS} {
		*p = clean(*p)
	}
	if r.WarmStartP50Ms != nil {
		v := clean(*r.WarmStartP50Ms)
		r.WarmStartP50Ms = &v
	}
	r.StagesP50Ms, r.StagesP99Ms = cleanMap(r.StagesP50Ms), cleanMap(r.StagesP99Ms)
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
	fmt.Fprintf(w, "grove-bench: %d files, %d tasks, concurrency %d, %d CPUs, git %s\n",
		r.Files, r.Tasks, r.Concurrency, r.CPUs, r.GitVersion)
	if r.WarmPool != "" {
		fmt.Fprintf(w, "warm pool (--warm %d): %s\n", r.Warm, r.WarmPool)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t") }
	row("", "grove", "baseline", "grove/baseline")
	row("tasks/s", f(r.GroveTasksPerS, 2), f(r.BaselineTasksPerS, 2), x(r.ThroughputRatio))
	row("wall (s)", f(r.GroveWallS, 1), f(r.BaselineWallS, 1), "")
	row("start p50 (ms) [grove: submit→agent; git: →worktree]", ms(r.StartP50Ms), ms(r.BaselineCreateP50Ms), x(r.StartRatioP50))
	row("start p99 (ms)", ms(r.StartP99Ms), ms(r.BaselineCreateP99Ms), x(ratio(r.StartP99Ms, r.BaselineCreateP99Ms)))
	row("end-to-end p50 (ms)", ms(r.E2EP50Ms), ms(r.BaselineE2EP50Ms), x(r.E2ERatioP50))
	row("end-to-end p99 (ms)", ms(r.E2EP99Ms), ms(r.BaselineE2EP99Ms), x(ratio(r.E2EP99Ms, r.BaselineE2EP99Ms)))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	kv := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	if r.WarmStartP50Ms != nil {
		kv("warm start p50", ms(*r.WarmStartP50Ms)+" ms")
	}
	kv("end-to-end p50/p99 by audit event", ms(r.E2EEventP50Ms)+" / "+ms(r.E2EEventP99Ms)+" ms (submit → \"applied\", no polling)")
	var stages []string
	for _, s := range stageNames {
		stages = append(stages, fmt.Sprintf("%s %s/%s", s.name, ms(r.StagesP50Ms[s.name]), ms(r.StagesP99Ms[s.name])))
	}
	kv("stages p50/p99 (ms)", strings.Join(stages, ", "))
	kv("worktree create p50", ms(r.WorktreeCreateP50Ms)+" ms (daemon's CreateWorktree, no queueing)")
	kv("submit wall p50/p99", fmt.Sprintf("%s / %s ms (%d sequential, idle daemon)", ms(r.SubmitWallP50Ms), ms(r.SubmitWallP99Ms), r.SubmitSamples))
	kv("ls wall p50", fmt.Sprintf("%s ms (%d tasks, idle); %s ms while polling under load (%d polls)",
		ms(r.LsWallP50Ms), r.LsTasks, ms(r.LsPollP50Ms), r.LsPolls))
	kv("daemon peak RSS", f(r.DaemonRSSMB, 1)+" MB")
	kv("repo build", f(r.RepoBuildS, 1)+" s")
	return tw.Flush()
}
