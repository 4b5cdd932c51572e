package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/grove-dev/grove/jobs/supervise"
)

// loadSandbox reads the policy the task's latest run applied, if any.
func loadSandbox(v *taskView) {
	if v.Run == nil {
		return
	}
	if a, ok, err := supervise.ReadApplied(v.Run.Dir); err == nil && ok {
		v.Sandbox = &a
	}
}

// sandboxLines are `grove show`'s lines about the sandbox: what the run
// enforced (never more than it did), or, before a run, what was asked.
func sandboxLines(v taskView, p func(k, val string)) {
	a := v.Sandbox
	o := v.Options
	if a == nil {
		if v.Run != nil {
			p("sandbox", "not recorded (a run by an older grove ran unconfined)")
			return
		}
		asked := "decided when the agent starts"
		if o.Net == "none" {
			asked += "; --net none"
		}
		if len(o.AllowWrite) > 0 {
			asked += "; also writable: " + strings.Join(o.AllowWrite, ", ")
		}
		p("sandbox", asked)
		return
	}
	switch {
	case a.Mode == supervise.SandboxOff:
		p("sandbox", "off: the agent ran unconfined (grove serve --sandbox off)")
	case !a.Landlock:
		p("sandbox", fmt.Sprintf("%s, NOT enforced: the agent ran unconfined (kernel Landlock ABI %d)", a.Mode, a.ABI))
	default:
		p("sandbox", fmt.Sprintf("on (Landlock ABI %d, %s): writes outside the paths below are refused (EACCES)", a.ABI, a.Mode))
		p("writable", strings.Join(a.Write, ", "))
	}
	if a.Mode == supervise.SandboxOff {
		return
	}
	p("network", a.Net)
	p("limits", limitsLine(a))
	if a.Cgroup != "" {
		p("cgroup", a.Cgroup)
	}
	for _, n := range a.NotEnforced {
		p("not enforced", n)
	}
}

func limitsLine(a *supervise.Applied) string {
	l := a.Limits
	var parts []string
	if a.CoreDumps {
		parts = append(parts, "core dumps on")
	} else {
		parts = append(parts, "core dumps off")
	}
	if l.OpenFiles > 0 {
		parts = append(parts, fmt.Sprintf("open files %d", l.OpenFiles))
	}
	if l.FileSize > 0 {
		parts = append(parts, fmt.Sprintf("max file size %d bytes", l.FileSize))
	}
	if l.CPU > 0 {
		parts = append(parts, "cpu "+l.CPU.Round(time.Second).String())
	}
	if l.Memory > 0 {
		parts = append(parts, fmt.Sprintf("memory %d bytes", l.Memory))
	}
	if l.Procs > 0 {
		parts = append(parts, fmt.Sprintf("processes %d", l.Procs))
	}
	return strings.Join(parts, ", ")
}

// checkSandbox is doctor's line about the kernel's Landlock.
func checkSandbox(rep *doctorReport) {
	abi := supervise.LandlockABI()
	if abi == 0 {
		rep.add("sandbox", checkInfo, "grove serve --sandbox best-effort runs agents unconfined here",
			"the kernel has no Landlock: agents cannot be confined")
		return
	}
	net := "--net none supported"
	if abi < 4 {
		net = "--net none needs ABI 4"
	}
	rep.add("sandbox", checkOK, "", "Landlock ABI %d (%s)", abi, net)
}
