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

// A process whose only link to dir is a memory mapping (the file closed,
// cwd elsewhere: a shared library loaded from a virtualenv in the
// worktree) is seen; InOrWithEnv finds it and one that only carries the
// environment mark, in one walk.
func TestInSeesMappingsAndInOrWithEnvMerges(t *testing.T) {
	is := is.New(t)
	dir := t.TempDir()
	ready := filepath.Join(t.TempDir(), "ready")
	is.NoErr(os.WriteFile(filepath.Join(dir, "lib.so"), make([]byte, 8192), 0o644))
	mapper := exec.Command("python3", "-c", `import mmap, os, sys, time
f = open(sys.argv[1] + "/lib.so", "rb")
m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
f.close()
os.chdir("/")
open(sys.argv[2], "w").close()
time.sleep(30)`, dir, ready)
	mapper.Dir = "/"
	is.NoErr(mapper.Start())
	t.Cleanup(func() { _ = mapper.Process.Kill(); _ = mapper.Wait() })
	mark := "map-" + strconv.Itoa(os.Getpid())
	marked := exec.Command("sleep", "30")
	marked.Dir = "/"
	marked.Env = append(os.Environ(), "GROVE_TEST_MARK="+mark)
	is.NoErr(marked.Start())
	t.Cleanup(func() { _ = marked.Process.Kill(); _ = marked.Wait() })
	waitFor(t, 20*time.Second, "the mapper to map its file", func() bool { _, err := os.Stat(ready); return err == nil })

	pids, err := In(dir)
	is.NoErr(err)
	is.Equal(pids, []int{mapper.Process.Pid}) // by its mapping alone

	both, err := InOrWithEnv(dir, "GROVE_TEST_MARK", mark)
	is.NoErr(err)
	want := []int{mapper.Process.Pid, marked.Process.Pid}
	slices.Sort(want)
	is.Equal(both, want)

	onlyDir, err := InOrWithEnv(dir, "GROVE_TEST_MARK", "")
	is.NoErr(err)
	is.Equal(onlyDir, []int{mapper.Process.Pid}) // an empty value matches nothing
}

// BenchmarkIn times one scan of every process on the box for a directory
// none of them uses (the gate's common case).
func BenchmarkIn(b *testing.B) {
	dir := b.TempDir()
	for b.Loop() {
		if _, err := In(dir); err != nil {
			b.Fatal(err)
		}
	}
	ents, _ := os.ReadDir("/proc")
	b.ReportMetric(float64(len(ents)), "proc-entries")
}
