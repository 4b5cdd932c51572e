package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPU accounting: wall-clock figures on a shared 2-core box swing with
// whatever else runs; the CPU time a side spends per task does not. grove's
// side is the daemon (itself, and every child it waited for: git,
// supervisors and, through them, agents) plus this process's children
// while a grove round runs (grove submit, grove wait, the ls polls);
// the baseline's is this process's children while a baseline round runs.

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times (100 on
// every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// procCPU is pid's own CPU time and that of its waited-for children
// (/proc/<pid>/stat utime+stime, cutime+cstime); 0 when unreadable.
func procCPU(pid int) (self, children time.Duration) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // comm may hold spaces
	if i < 0 {
		return 0, 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, 0
	}
	tick := func(k int) time.Duration {
		n, _ := strconv.ParseInt(f[k], 10, 64)
		return time.Duration(n) * clockTick
	}
	return tick(11) + tick(12), tick(13) + tick(14) // fields 14-17
}

// childrenCPU is the CPU time of this process's waited-for children.
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuSplit is CPU time by who spent it.
type cpuSplit struct {
	Daemon   time.Duration // grove serve itself
	Children time.Duration // the daemon's children: git, supervisors, agents
	Local    time.Duration // this process's children: git (baseline), grove CLI calls
}

func (c cpuSplit) total() time.Duration { return c.Daemon + c.Children + c.Local }

func (c cpuSplit) minus(o cpuSplit) cpuSplit {
	return cpuSplit{c.Daemon - o.Daemon, c.Children - o.Children, c.Local - o.Local}
}

func (c cpuSplit) plus(o cpuSplit) cpuSplit {
	return cpuSplit{c.Daemon + o.Daemon, c.Children + o.Children, c.Local + o.Local}
}

// cpuMeter sums CPU time over the spans it is started and stopped for.
type cpuMeter struct {
	pid   int // the daemon; 0: this process's children only
	total cpuSplit
	mark  cpuSplit
}

func (m *cpuMeter) now() cpuSplit {
	c := cpuSplit{Local: childrenCPU()}
	if m.pid > 0 {
		c.Daemon, c.Children = procCPU(m.pid)
	}
	return c
}

func (m *cpuMeter) start() { m.mark = m.now() }
func (m *cpuMeter) stop()  { m.total = m.total.plus(m.now().minus(m.mark)) }
