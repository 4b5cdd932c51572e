package gitops

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/matryer/is"
)

// awaitExit returns once the process has exited, not before, and leaves
// it to Wait (its exit status intact); a process already gone returns
// at once.
func TestAwaitExit(t *testing.T) {
	is := is.New(t)
	cmd := exec.Command("sh", "-c", "sleep 0.3; exit 3")
	is.NoErr(cmd.Start())
	began := time.Now()
	awaitExit(cmd.Process)
	if d := time.Since(began); d < 250*time.Millisecond {
		t.Fatalf("awaitExit returned after %s, before the process ended", d)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	is.True(err != nil)
	is.True(errors.As(err, &ee))
	is.Equal(ee.ExitCode(), 3)

	done := exec.Command("true")
	is.NoErr(done.Start())
	waitExited(t, done.Process.Pid)
	began = time.Now()
	awaitExit(done.Process) // exited, not reaped
	is.True(time.Since(began) < 100*time.Millisecond)
	is.NoErr(done.Wait())
}

// waitExited waits until child pid has exited (a zombie: this process has
// not reaped it), polling its /proc stat with a deadline.
func waitExited(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := bytes.LastIndexByte(b, ')'); err == nil && i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
			return
		}
		time.Sleep(2 * time.Millisecond) // a poll, bounded by the deadline
	}
	t.Fatalf("process %d did not exit", pid)
}
