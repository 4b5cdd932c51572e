package supervise

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Proc identifies one process across pid reuse and reboots.
type Proc struct {
	Pid       int
	StartTime uint64 // /proc/<pid>/stat field 22, clock ticks since boot
	BootID    string
}

var (
	bootOnce sync.Once
	bootID   string
)

// BootID is this machine's current boot id ("" if unreadable).
func BootID() string {
	bootOnce.Do(func() {
		b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if err == nil {
			bootID = strings.TrimSpace(string(b))
		}
	})
	return bootID
}

// statFields returns the fields of /proc/<pid>/stat after the command name.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strings.Fields(s[i+1:]), nil // [0] is state (field 3)
}

// Identify reads the identity of a live process.
func Identify(pid int) (Proc, error) {
	f, err := statFields(pid)
	if err != nil {
		return Proc{}, fmt.Errorf("identify pid %d: %w", pid, err)
	}
	if len(f) < 20 {
		return Proc{}, fmt.Errorf("identify pid %d: short stat", pid)
	}
	st, err := strconv.ParseUint(f[19], 10, 64) // field 22
	if err != nil {
		return Proc{}, fmt.Errorf("identify pid %d: start time: %w", pid, err)
	}
	return Proc{Pid: pid, StartTime: st, BootID: BootID()}, nil
}

// Alive reports whether p is still the same running process: same boot, same
// pid and start time, and not a zombie.
func (p Proc) Alive() bool {
	if p.Pid <= 0 || p.BootID != BootID() {
		return false
	}
	f, err := statFields(p.Pid)
	if err != nil || len(f) < 20 {
		return false
	}
	if f[0] == "Z" || f[0] == "X" {
		return false
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return err == nil && st == p.StartTime
}

// Signal sends sig to p if, and only if, it is still alive as identified.
func (p Proc) Signal(sig syscall.Signal) error {
	if !p.Alive() {
		return os.ErrProcessDone
	}
	return syscall.Kill(p.Pid, sig)
}

// killGroup signals a process group; a group already gone is not an error.
func killGroup(pgid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal group %d: %w", pgid, err)
	}
	return nil
}

// groupAlive reports whether any process is left in group pgid.
func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) == nil
}
