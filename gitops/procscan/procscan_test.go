package procscan

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/matryer/is"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); ; {
		if cond() {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A process that opened a file in dir and moved away is still seen, by its
// descriptor; so is one with dir in its environment only when asked by env.
func TestInSeesDescriptors(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	ready := filepath.Join(t.TempDir(), "ready")
	// cwd is /, the only link to dir is fd 3.
	cmd := exec.Command("sh", "-c", `exec 3>>"$1/a.txt"; : > "$2"; exec sleep 30`, "sh", dir, ready)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "GROVE_TEST_MARK=fd-"+strconv.Itoa(os.Getpid()))
	is.NoErr(cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	waitFor(t, 20*time.Second, "the writer to open its file", func() bool { _, err := os.Stat(ready); return err == nil })

	pids, err := In(dir)
	is.NoErr(err)
	is.True(slices.Contains(pids, cmd.Process.Pid)) // seen by its open descriptor

	byEnv, err := WithEnv("GROVE_TEST_MARK", "fd-"+strconv.Itoa(os.Getpid()))
	is.NoErr(err)
	is.Equal(byEnv, []int{cmd.Process.Pid})

	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	pids, err = In(dir)
	is.NoErr(err)
	is.True(!slices.Contains(pids, cmd.Process.Pid)) // gone once it exits
}
