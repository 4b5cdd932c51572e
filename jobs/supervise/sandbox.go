package supervise

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/landlock-lsm/go-landlock/landlock"
	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// Sandbox modes (grove serve --sandbox).
const (
	// SandboxRequired refuses to start a run the kernel cannot confine
	// as asked (no Landlock; --net none without Landlock ABI 4).
	SandboxRequired = "required"
	// SandboxBestEffort confines as far as the kernel allows and records
	// what was not enforced.
	SandboxBestEffort = "best-effort"
	// SandboxOff runs unconfined (recorded as such).
	SandboxOff = "off"
)

// SandboxFile is the run directory file in which the supervisor records
// the policy it actually applied (Applied), before it starts the agent.
const SandboxFile = "sandbox.json"

// Sandbox is the confinement a Spec asks for. Paths are absolute; the
// supervisor does not interpret them beyond opening them.
//
// Under Landlock the process gets read and execute access everywhere and
// write access only beneath Write (full rights, including renames between
// directories beneath Write) and to the files beneath WriteFiles (write
// and ioctl on existing files, no creation: /dev/null, terminals).
// Everything else is refused with EACCES (EXDEV for a rename out of a
// writable tree).
type Sandbox struct {
	Mode       string   `json:"mode"`
	Write      []string `json:"write,omitempty"`
	WriteFiles []string `json:"write_files,omitempty"`
	// Net "none" refuses TCP connect and bind, except binding BindPorts.
	Net       string `json:"net,omitempty"`
	BindPorts []int  `json:"bind_ports,omitempty"`
	Limits    Limits `json:"limits"`
	// MakeDirs are created (mode 0700, parents too) before the policy is
	// built: the private TMPDIR, cache directories that must exist to be
	// granted.
	MakeDirs []string `json:"make_dirs,omitempty"`
	// AdminDir is the worktree's git admin dir, recorded for the daemon
	// (the agent may rewrite the worktree's .git file that names it).
	AdminDir string `json:"admin_dir,omitempty"`
	// Cgroup names the cgroup created for the run's memory and process
	// limits (unique per run).
	Cgroup string `json:"cgroup,omitempty"`
}

// Limits are per-run resource limits; zero means "not limited" except
// for core dumps, which are always off in a sandbox.
type Limits struct {
	OpenFiles uint64        `json:"open_files,omitempty"`    // RLIMIT_NOFILE
	FileSize  int64         `json:"max_file_size,omitempty"` // RLIMIT_FSIZE, bytes
	CPU       time.Duration `json:"cpu,omitempty"`           // RLIMIT_CPU, whole seconds
	Memory    int64         `json:"memory,omitempty"`        // cgroup, bytes
	Procs     int64         `json:"procs,omitempty"`         // cgroup pids.max
}

// Applied is what the supervisor actually enforced, written to
// SandboxFile before the agent starts. Every limit that could not be
// enforced says so in NotEnforced; nothing is reported as enforced that
// was not.
type Applied struct {
	Mode        string   `json:"mode"`
	Landlock    bool     `json:"landlock"` // the agent runs confined
	ABI         int      `json:"abi"`      // the kernel's Landlock ABI (0: none)
	Write       []string `json:"write,omitempty"`
	Net         string   `json:"net"` // "allowed", "none", or "allowed (not enforced: …)"
	BindPorts   []int    `json:"bind_ports,omitempty"`
	Limits      Limits   `json:"limits"`
	CoreDumps   bool     `json:"core_dumps"`
	Cgroup      string   `json:"cgroup,omitempty"` // the cgroup that enforces memory/procs
	NotEnforced []string `json:"not_enforced,omitempty"`
	// Setup is how long building the confinement took (ruleset, rlimits,
	// cgroup), the sandbox's cost at start besides two syscalls at fork.
	Setup time.Duration `json:"setup_ns"`
}

// LandlockABI is the kernel's Landlock ABI version, 0 when it has none
// (not built in, or not enabled at boot).
func LandlockABI() int {
	v, err := ll.LandlockGetABIVersion()
	if err != nil {
		return 0
	}
	return v
}

// ReadApplied reads the policy the supervisor of dir recorded; ok is
// false when it recorded none (a run without a sandbox, or older grove).
func ReadApplied(dir string) (a Applied, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, SandboxFile))
	if errors.Is(err, os.ErrNotExist) {
		return a, false, nil
	}
	if err != nil {
		return a, false, fmt.Errorf("read sandbox record: %w", err)
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, false, fmt.Errorf("decode sandbox record %s: %w", dir, err)
	}
	return a, true, nil
}

// confinement is a sandbox ready to be entered by the thread that forks
// the agent.
type confinement struct {
	applied Applied
	rulesFD int // -1: no Landlock
	flags   uint32
	cg      *cgroup // nil: no cgroup
}

// prepare builds the Landlock ruleset and the cgroup of s, sets the
// supervisor's own resource limits (inherited by the agent) and returns
// what was applied. In required mode anything the kernel cannot enforce
// of the filesystem and network policy is an error; limits that cannot
// be enforced are recorded in Applied.NotEnforced in every mode.
func prepare(s Sandbox) (*confinement, error) {
	began := time.Now()
	c := &confinement{rulesFD: -1, applied: Applied{Mode: s.Mode, ABI: LandlockABI(), Net: "allowed",
		BindPorts: s.BindPorts, Limits: s.Limits}}
	if s.Mode == SandboxOff {
		c.applied.CoreDumps = true
		return c, nil
	}
	if err := c.landlock(s); err != nil {
		return nil, err
	}
	c.rlimits(s.Limits)
	c.cgroup(s)
	c.applied.Setup = time.Since(began)
	return c, nil
}

func (c *confinement) landlock(s Sandbox) error {
	abi := c.applied.ABI
	required := s.Mode == SandboxRequired
	if abi < 1 {
		if required {
			return errors.New("the kernel has no Landlock (serve --sandbox best-effort runs agents unconfined)")
		}
		c.applied.NotEnforced = append(c.applied.NotEnforced, "filesystem: the kernel has no Landlock")
		if s.Net == "none" {
			c.applied.Net = "allowed (not enforced: --net none needs Landlock ABI 4)"
		}
		return nil
	}
	cfg := landlock.Config{HandledAccessFS: landlock.V7.HandledAccessFS, Scoped: landlock.V7.Scoped}
	if s.Net == "none" {
		if abi < 4 {
			if required {
				return fmt.Errorf("--net none needs Landlock ABI 4, the kernel has %d", abi)
			}
			c.applied.Net = fmt.Sprintf("allowed (not enforced: --net none needs Landlock ABI 4, the kernel has %d)", abi)
		} else {
			cfg.HandledAccessNet = landlock.AccessNetSet(ll.AccessNetBindTCP | ll.AccessNetConnectTCP)
			c.applied.Net = "none"
		}
	}
	// A Write path that is a file (an --allow-write of one file) gets the
	// file rights; a directory the full ones.
	var dirs, files []string
	for _, p := range s.Write {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			files = append(files, p)
		} else {
			dirs = append(dirs, p)
		}
	}
	fileRights := landlock.AccessFSSet(ll.AccessFSReadFile | ll.AccessFSWriteFile | ll.AccessFSTruncate)
	rules := []landlock.Rule{
		landlock.RODirs("/"),
		landlock.RWDirs(dirs...).WithRefer().IgnoreIfMissing(),
		landlock.PathAccess(fileRights, files...).IgnoreIfMissing(),
		landlock.PathAccess(fileRights|landlock.AccessFSSet(ll.AccessFSIoctlDev), s.WriteFiles...).IgnoreIfMissing(),
	}
	if cfg.HandledAccessNet != 0 {
		for _, p := range s.BindPorts {
			rules = append(rules, landlock.BindTCP(uint16(p)))
		}
	}
	fd, flags, err := cfg.BestEffort().NewRulesetFD(rules...)
	if err != nil {
		return fmt.Errorf("build landlock ruleset: %w", err)
	}
	if fd < 0 { // best effort found nothing this kernel can enforce of it
		if required {
			return fmt.Errorf("the kernel's Landlock (ABI %d) cannot enforce this policy", abi)
		}
		c.applied.NotEnforced = append(c.applied.NotEnforced, fmt.Sprintf("filesystem: the kernel's Landlock (ABI %d) cannot enforce this policy", abi))
		return nil
	}
	c.rulesFD, c.flags = fd, flags
	c.applied.Landlock = true
	for _, p := range s.Write {
		if _, err := os.Stat(p); err == nil {
			c.applied.Write = append(c.applied.Write, p)
		}
	}
	return nil
}

// rlimits lowers the supervisor's own limits, soft and hard, so that the
// agent inherits them and (unless it holds CAP_SYS_RESOURCE) cannot raise
// them. Limits are per process: the supervisor is a process of its own
// per run, so its limits are the run's. Floors keep the supervisor
// itself working (it opens a few files and writes small ones).
func (c *confinement) rlimits(l Limits) {
	set := func(res int, v uint64, what string) {
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: v, Max: v}); err != nil {
			c.applied.NotEnforced = append(c.applied.NotEnforced, fmt.Sprintf("%s: %v", what, err))
		}
	}
	set(unix.RLIMIT_CORE, 0, "core dumps off")
	if l.OpenFiles > 0 {
		set(unix.RLIMIT_NOFILE, max(l.OpenFiles, 32), "open files")
	}
	if l.FileSize > 0 {
		set(unix.RLIMIT_FSIZE, uint64(max(l.FileSize, 1<<16)), "max file size")
	}
	if l.CPU > 0 {
		set(unix.RLIMIT_CPU, uint64(max(l.CPU/time.Second, 1)), "cpu time")
	}
	c.applied.CoreDumps = slices.IndexFunc(c.applied.NotEnforced, func(s string) bool {
		return strings.HasPrefix(s, "core dumps")
	}) >= 0
}

func (c *confinement) cgroup(s Sandbox) {
	if s.Limits.Memory <= 0 && s.Limits.Procs <= 0 {
		return
	}
	cg, err := newCgroup(s.Cgroup, s.Limits.Memory, s.Limits.Procs)
	if err != nil {
		if s.Limits.Memory > 0 {
			c.applied.NotEnforced = append(c.applied.NotEnforced, "memory: "+err.Error())
		}
		if s.Limits.Procs > 0 {
			c.applied.NotEnforced = append(c.applied.NotEnforced, "processes: "+err.Error())
		}
		return
	}
	c.cg = cg
	c.applied.Cgroup = cg.describe()
}

// enter runs on the locked OS thread that is about to fork the agent:
// it moves that thread into the run's cgroup (v1: the child inherits the
// forking thread's cgroups) and restricts it with Landlock (this thread
// only: the supervisor's other threads keep writing the run dir). The
// thread is never unlocked, so the Go runtime never reuses it. left is
// called after the fork to take the thread out of the cgroup again.
func (c *confinement) enter(attr *syscall.SysProcAttr) (left func(), err error) {
	left = func() {}
	if c.cg != nil {
		left, err = c.cg.enterThread(attr)
		if err != nil {
			return func() {}, err
		}
	}
	if c.rulesFD >= 0 {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			left()
			return func() {}, fmt.Errorf("prctl(no_new_privs): %w", err)
		}
		if err := ll.LandlockRestrictSelf(c.rulesFD, c.flags); err != nil {
			left()
			return func() {}, fmt.Errorf("landlock_restrict_self: %w", err)
		}
	}
	return left, nil
}

// close releases the ruleset descriptor (after the agent has started).
func (c *confinement) close() {
	if c == nil {
		return
	}
	if c.rulesFD >= 0 {
		_ = unix.Close(c.rulesFD)
		c.rulesFD = -1
	}
}

// removeCgroup removes the run's cgroup once nothing runs in it.
func (c *confinement) removeCgroup() {
	if c.cg != nil {
		c.cg.remove()
	}
}
