package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"
)

// sandboxResult is the sandbox's cost at start: single tasks on the small
// repository, alternating between a daemon with the sandbox on (the
// default where the kernel has Landlock) and one with --sandbox off.
type sandboxResult struct {
	On, Off             []time.Duration // submit → agent start
	OnLaunch, OffLaunch []time.Duration // "worktree" → "started" events (run_agent + supervisor)
	Err                 error           // why the phase could not run
}

// runSandboxProbes runs n tasks on each side, one at a time, alternating
// the sides ABBA-style so that load from elsewhere falls on both.
// With database (PostgreSQL) each daemon has a host name of its own.
func runSandboxProbes(ctx context.Context, r runner, bin, root, repo, marks string, n int, database string, progress io.Writer) sandboxResult {
	var res sandboxResult
	sides := map[bool]groveCLI{}
	for _, on := range []bool{true, false} {
		name, extra := "sandbox-on", []string{"--allow-write", marks}
		if !on {
			name, extra = "sandbox-off", append(extra, "--sandbox", "off")
		}
		extra = append(extra, serveHostArgs(database, name)...)
		home := filepath.Join(root, "home-"+name)
		d, err := startDaemon(ctx, r, bin, home, 1, 0, filepath.Join(root, name+".log"), extra...)
		if err != nil {
			res.Err = fmt.Errorf("%s: %w", name, err)
			return res
		}
		defer d.stop()
		sides[on] = groveCLI{r: r, bin: bin, home: home}
	}
	for i := range 2 * n {
		on := i%4 == 0 || i%4 == 3 // on, off, off, on, ...
		g := sides[on]
		id, began, _, err := g.submit(ctx, repo, marks, "auto")
		if err == nil {
			_, _, err = g.wait(ctx, id)
		}
		var start time.Time
		if err == nil {
			start, err = readStart(marks, id)
		}
		var ev map[string]time.Time
		if err == nil {
			ev, err = taskEvents(ctx, g, id)
		}
		if err != nil {
			res.Err = err
			return res
		}
		launch := ev["started"].Sub(ev["worktree"])
		if on {
			res.On, res.OnLaunch = append(res.On, start.Sub(began)), append(res.OnLaunch, launch)
		} else {
			res.Off, res.OffLaunch = append(res.Off, start.Sub(began)), append(res.OffLaunch, launch)
		}
	}
	fmt.Fprintf(progress, "grove-bench:   sandbox probes: on p50 %.1f ms, off p50 %.1f ms\n",
		summarize(res.On).P50, summarize(res.Off).P50)
	return res
}

// fillSandbox copies the probes into the report.
func (rep *report) fillSandbox(s sandboxResult) {
	if s.Err != nil {
		rep.SandboxNote = s.Err.Error()
		return
	}
	on, off := summarize(s.On), summarize(s.Off)
	rep.SandboxStartP50Ms, rep.NoSandboxStartP50Ms = clean(on.P50), clean(off.P50)
	rep.SandboxStartDeltaMs = clean(on.P50 - off.P50)
	rep.SandboxLaunchP50Ms, rep.NoSandboxLaunchP50Ms = clean(summarize(s.OnLaunch).P50), clean(summarize(s.OffLaunch).P50)
	rep.SandboxProbes = on.N
}

// sandboxRow is the table's line for the probes.
func sandboxRow(r report) string {
	if r.SandboxNote != "" {
		return fmt.Sprintf("%-28s not measured: %s\n", "start p50 sandbox on/off", r.SandboxNote)
	}
	if r.SandboxProbes == 0 {
		return ""
	}
	return fmt.Sprintf("%-28s %.1f / %.1f ms (Δ %.1f ms; launch %.0f / %.0f ms; %d tasks each side, small repo)\n",
		"start p50 sandbox on/off", r.SandboxStartP50Ms, r.NoSandboxStartP50Ms, r.SandboxStartDeltaMs,
		r.SandboxLaunchP50Ms, r.NoSandboxLaunchP50Ms, r.SandboxProbes)
}
