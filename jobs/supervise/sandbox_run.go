package supervise

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// prepareSandbox readies the confinement s asks for and records it in
// dir/SandboxFile, before the agent starts. A nil s gives a nil
// confinement (whose methods do nothing). The error is the reason a
// required sandbox cannot be had; the agent must not start then.
func prepareSandbox(dir string, s *Sandbox) (*confinement, error) {
	if s == nil {
		return nil, nil
	}
	for _, d := range s.MakeDirs {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	c, err := prepare(*s)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(c.applied)
	if err != nil {
		c.close()
		c.removeCgroup()
		return nil, fmt.Errorf("encode sandbox record: %w", err)
	}
	// Renamed into place, not synced: a crash that loses it loses the run
	// too (show then says the policy was not recorded, never "unconfined").
	if err := writeFileRenamed(filepath.Join(dir, SandboxFile), b); err != nil {
		c.close()
		c.removeCgroup()
		return nil, err
	}
	return c, nil
}

// enterFunc is startLocked's hook for c; nil when there is nothing to enter.
func (c *confinement) enterFunc(attr *syscall.SysProcAttr) func() (func(), error) {
	if c == nil || (c.rulesFD < 0 && c.cg == nil) {
		return nil
	}
	return func() (func(), error) { return c.enter(attr) }
}

// done ends the confinement after the run: the cgroup goes.
func (c *confinement) done() {
	if c == nil {
		return
	}
	c.close()
	c.removeCgroup()
}

// writeFileRenamed writes path via path.tmp and a rename: a reader sees
// the whole file or none (no fsync: see prepareSandbox).
func writeFileRenamed(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}

// ReadSpec reads the spec of the run in dir.
func ReadSpec(dir string) (Spec, error) {
	var s Spec
	b, err := os.ReadFile(filepath.Join(dir, SpecFile))
	if err != nil {
		return s, fmt.Errorf("read run spec: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("decode run spec %s: %w", dir, err)
	}
	return s, nil
}
