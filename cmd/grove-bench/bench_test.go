package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/matryer/is"
)

// TestBenchSmall builds grove and runs the whole harness on a tiny
// repository, checking the JSON report carries the figures the issue names.
func TestBenchSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grove and runs a daemon")
	}
	is := is.New(t)
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "grove")
	build := exec.Command("go", "build", "-o", bin, "../grove")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ../grove: %v\n%s", err, out)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"--grove", bin, "--dir", tmp, "--files", "50", "--tasks", "4", "--concurrency", "2",
		"--submits", "3", "--ls-runs", "3", "--timeout", "2m", "--json"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	var rep map[string]any
	is.NoErr(json.Unmarshal(stdout.Bytes(), &rep))
	for _, k := range []string{"throughput_ratio", "start_p50_ms", "start_p99_ms", "baseline_create_p50_ms",
		"e2e_p50_ms", "e2e_p99_ms", "grove_tasks_per_s", "baseline_tasks_per_s", "submit_wall_p50_ms",
		"ls_wall_p50_ms", "ls_tasks", "daemon_rss_mb", "files", "tasks", "concurrency", "e2e_event_p50_ms"} {
		v, ok := rep[k].(float64)
		if !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, rep[k])
		}
	}
	is.Equal(rep["files"], 50.0)
	is.Equal(rep["tasks"], 4.0)
	is.Equal(rep["concurrency"], 2.0)
	is.Equal(rep["ls_tasks"], 4.0+3.0) // the run's tasks and the submit samples
	stages, _ := rep["stages_p50_ms"].(map[string]any)
	for _, s := range stageNames {
		if v, _ := stages[s.name].(float64); v < 0 {
			t.Errorf("stage %s = %v", s.name, v)
		}
	}
	if _, ok := rep["warm_start_p50_ms"]; ok {
		t.Error("warm_start_p50_ms reported without --warm")
	}
}

// TestUsage checks flag errors exit 2 and -h exits 0.
func TestUsage(t *testing.T) {
	is := is.New(t)
	var out, errb bytes.Buffer
	is.Equal(run([]string{"--tasks", "0"}, &out, &errb), 2)
	is.Equal(run([]string{"--nope"}, &out, &errb), 2)
	is.Equal(run([]string{"extra"}, &out, &errb), 2)
	is.Equal(run([]string{"-h"}, &out, &errb), 0)
}

func TestFilePath(t *testing.T) {
	is := is.New(t)
	is.Equal(filePath(0, 10), "src/d0/f000000.txt")
	is.Equal(filePath(17, 10000), "src/d0/d0/d1/f000017.txt")
	seen := map[string]bool{}
	for i := range 5000 {
		p := filePath(i, 5000)
		is.True(!seen[p]) // unique
		seen[p] = true
	}
}
