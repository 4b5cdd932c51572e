package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/matryer/is"

	"github.com/grove-dev/grove/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestBenchHostsPostgres runs the harness on a PostgreSQL database with
// --hosts 2: the one-host and two-host figures are reported, the second
// host's tasks ran on its own host, and every daemon of the run (the two
// hosts, the two sandbox probe daemons) served under a name of its own.
func TestBenchHostsPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds grove and runs four daemons")
	}
	is := is.New(t)
	dsn := pgtest.DSN(t)
	tmp := t.TempDir()
	bin := buildGrove(t, tmp)
	var stdout, stderr bytes.Buffer
	code := run([]string{"--grove", bin, "--dir", tmp, "--database", dsn, "--hosts", "2", "--files", "50", "--tasks", "4",
		"--concurrency", "1", "--rounds", "2", "--submits", "1", "--ls-runs", "1", "--sandbox-probes", "1",
		"--timeout", "3m", "--json"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	var rep map[string]any
	is.NoErr(json.Unmarshal(stdout.Bytes(), &rep))
	is.Equal(rep["database"], "postgres")
	is.Equal(rep["hosts"], 2.0)
	is.Equal(rep["hosts_tasks"], []any{2.0, 2.0})
	for _, k := range []string{"one_host_tasks_per_s", "hosts_tasks_per_s", "hosts_throughput_ratio", "one_host_wall_s",
		"hosts_wall_s", "one_host_e2e_p50_ms", "hosts_e2e_p50_ms", "one_host_cpu_ms_per_task", "hosts_cpu_ms_per_task",
		"grove_tasks_per_s", "sandbox_probes"} {
		if v, ok := rep[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, rep[k])
		}
	}
	if note, ok := rep["sandbox_note"]; ok {
		t.Errorf("sandbox probes not measured: %v", note)
	}
	// Applied tasks per host: host 1 ran the main phase, its share of the
	// comparison and the submit sample; host 2 only its share.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	is.NoErr(err)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT r.host, COUNT(*) FROM task t JOIN repo r ON r.id = t.repo_id
		WHERE t.state = 'applied' GROUP BY r.host`)
	is.NoErr(err)
	perHost := map[string]int64{}
	for rows.Next() {
		var host string
		var n int64
		is.NoErr(rows.Scan(&host, &n))
		perHost[strings.TrimPrefix(host, strings.SplitN(host, "-", 2)[0]+"-")] = n
	}
	is.NoErr(rows.Err())
	is.Equal(perHost, map[string]int64{"1": 4 + 4 + 2 + 1, "2": 2, "sandbox-on": 1, "sandbox-off": 1})
}

// --hosts needs a shared database.
func TestHostsNeedsDatabase(t *testing.T) {
	is := is.New(t)
	var out, errb bytes.Buffer
	is.Equal(run([]string{"--hosts", "2"}, &out, &errb), 2)
	is.True(strings.Contains(errb.String(), "--hosts needs --database"))
}

// The table names both figures and the ratio; without --hosts it says
// nothing.
func TestHostsRow(t *testing.T) {
	is := is.New(t)
	is.Equal(hostsRow(report{Tasks: 20}), "")
	row := hostsRow(report{Tasks: 20, Hosts: 2, HostsTasks: []int{10, 10}, OneHostTasksPerS: 1.37, HostsTasksPerS: 1.06,
		HostsThroughputRatio: 0.77, OneHostWallS: 14.61, HostsWallS: 18.8, OneHostE2EP50Ms: 2779, HostsE2EP50Ms: 6175,
		OneHostCPUMsPerTask: 1127, HostsCPUMsPerTask: 1254})
	t.Log("\n" + row)
	is.True(strings.Contains(row, "1 host 1.37 tasks/s (20 tasks in 14.6 s, e2e p50 2779 ms, CPU 1127 ms/task)"))
	is.True(strings.Contains(row, "2 hosts 1.06 tasks/s (10+10 tasks in 18.8 s, e2e p50 6175 ms, CPU 1254 ms/task): 0.77x one host"))
}
