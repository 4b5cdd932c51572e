package main

import (
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
	"github.com/grove-dev/grove/jobs/supervise"
)

// sandboxServe are serve's sandbox flags.
type sandboxServe struct {
	mode       string
	allowWrite []string
}

func (s *sandboxServe) flags(c *cobra.Command) {
	c.Flags().StringVar(&s.mode, "sandbox", "", "required (refuse to run an agent unconfined), best-effort or off (default: required where the kernel has Landlock)")
	c.Flags().StringArrayVar(&s.allowWrite, "allow-write", nil, "a path every agent may write besides its worktree (repeatable)")
}

// apply checks the flags and copies them onto d.
func (s *sandboxServe) apply(d *jobs.Deps) error {
	switch s.mode {
	case "":
		s.mode = jobs.DefaultSandboxMode()
	case supervise.SandboxRequired, supervise.SandboxBestEffort, supervise.SandboxOff:
	default:
		return grove.Userf(grove.ErrUsage, "use required, best-effort or off", "bad --sandbox %q", s.mode)
	}
	if s.mode == supervise.SandboxRequired && supervise.LandlockABI() == 0 {
		return grove.Userf(grove.ErrUsage, "use --sandbox best-effort to run agents unconfined on this kernel",
			"--sandbox required: this kernel has no Landlock")
	}
	// $GROVE_ALLOW_WRITE (colon-separated) adds to --allow-write.
	extra := filepath.SplitList(os.Getenv("GROVE_ALLOW_WRITE"))
	paths, err := absPaths(append(s.allowWrite, slices.DeleteFunc(extra, func(p string) bool { return p == "" })...))
	if err != nil {
		return err
	}
	d.Sandbox = jobs.SandboxConfig{Mode: s.mode, AllowWrite: paths}
	return nil
}

// sandboxSubmit are submit's per-task sandbox flags.
type sandboxSubmit struct {
	allowWrite []string
	net        string
	passEnv    []string
	openFiles  uint64
	fileSize   string
	cpu        time.Duration
	memory     string
	procs      int64
}

func (s *sandboxSubmit) flags(c *cobra.Command) {
	f := c.Flags()
	f.StringArrayVar(&s.allowWrite, "allow-write", nil, "a path the agent may write besides its worktree (repeatable)")
	f.StringVar(&s.net, "net", "", "none: refuse the agent TCP connect and bind (except GROVE_PORT)")
	f.StringArrayVar(&s.passEnv, "pass-env", nil, "pass this variable of yours on to the agent (repeatable)")
	f.Uint64Var(&s.openFiles, "max-open-files", 0, "open files per process (0: not limited)")
	f.StringVar(&s.fileSize, "max-file-size", "", "largest file the agent may write, e.g. 1GiB")
	f.DurationVar(&s.cpu, "max-cpu", 0, "CPU time per process, e.g. 10m")
	f.StringVar(&s.memory, "max-memory", "", "memory of the agent and its children (cgroup), e.g. 4GiB")
	f.Int64Var(&s.procs, "max-procs", 0, "processes and threads of the agent (cgroup)")
}

// options turns the flags into the task's options, capturing the
// submitter's allow-listed environment.
func (s *sandboxSubmit) options() (grove.TaskOptions, error) {
	var o grove.TaskOptions
	if s.net != "" && s.net != "none" {
		return o, grove.Userf(grove.ErrUsage, "the network is allowed unless --net none", "bad --net %q", s.net)
	}
	paths, err := absPaths(s.allowWrite)
	if err != nil {
		return o, err
	}
	o.AllowWrite, o.Net, o.PassEnv = paths, s.net, s.passEnv
	o.MaxOpenFiles, o.MaxCPU, o.MaxProcs = s.openFiles, s.cpu, s.procs
	for _, b := range []struct {
		flag, v string
		dst     *int64
	}{{"--max-file-size", s.fileSize, &o.MaxFileSize}, {"--max-memory", s.memory, &o.MaxMemory}} {
		if b.v == "" {
			continue
		}
		n, err := parseBytes(b.v)
		if err != nil || n <= 0 {
			return o, grove.Userf(grove.ErrUsage, "write it like 1GiB or 500MB", "bad %s %q", b.flag, b.v)
		}
		*b.dst = n
	}
	o.Environ = jobs.SubmitterEnv(os.Environ(), s.passEnv)
	return o, nil
}

func absPaths(in []string) ([]string, error) {
	var out []string
	for _, p := range in {
		a, err := filepath.Abs(p)
		if err != nil || p == "" {
			return nil, grove.Userf(grove.ErrUsage, "give a path", "bad --allow-write %q", p)
		}
		out = append(out, a)
	}
	return out, nil
}
