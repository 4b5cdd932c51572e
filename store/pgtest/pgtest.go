// Package pgtest starts a private PostgreSQL server for tests: the
// server binaries Debian installs (initdb, pg_ctl), a cluster in a fresh
// temporary directory, a unix socket in that directory and no TCP port.
// PostgreSQL refuses to run as root, so under root the cluster belongs to
// the unprivileged user "nobody" and the binaries run with its
// credentials.
//
// One server serves a whole test binary; every DSN call creates a fresh
// database in it. Call Main from TestMain so the server is stopped when
// the tests end:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Without the binaries a test is skipped with the reason, except under
// CI=true, where a missing PostgreSQL fails the test (.ci/run installs it).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Role is the superuser the cluster is initialised with.
const Role = "grove"

// server is the running cluster of this test binary.
type server struct {
	bin  string // directory of initdb, pg_ctl, postgres
	dir  string // temp dir: data/, the socket, the log
	cred *syscall.Credential
}

var (
	once    sync.Once
	srv     *server
	srvErr  error
	dbCount atomic.Int64
)

// Main runs the tests of m and stops the server (if one was started)
// before the process exits with their code.
func Main(m *testing.M) {
	code := m.Run()
	if srv != nil {
		srv.stop()
	}
	os.Exit(code)
}

// M wraps m for a TestMain that hands it to another runner (such as
// testscript.Main, which exits itself): its Run runs the tests, then
// stops the server.
func M(m interface{ Run() int }) interface{ Run() int } { return stopAfter{m} }

type stopAfter struct{ m interface{ Run() int } }

func (s stopAfter) Run() int {
	code := s.m.Run()
	if srv != nil {
		srv.stop()
	}
	return code
}

// DSN returns the connection string of a new, empty database on the test
// binary's server, starting the server on first use. It skips t when the
// PostgreSQL binaries are missing, or fails it under CI=true.
func DSN(t testing.TB) string {
	t.Helper()
	once.Do(func() { srv, srvErr = start() })
	if srvErr != nil {
		var nb *noBinariesError
		if errors.As(srvErr, &nb) && os.Getenv("CI") != "true" {
			t.Skipf("pgtest: %v (install the postgresql package to run the PostgreSQL tests)", srvErr)
		}
		t.Fatalf("pgtest: %v", srvErr)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbCount.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.dsn("postgres"))
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	return srv.dsn(name)
}

// Available reports whether DSN can start a server here without skipping.
func Available() bool {
	_, err := binDir()
	return err == nil
}

func (s *server) dsn(db string) string {
	return fmt.Sprintf("postgres://%s@/%s?host=%s&sslmode=disable", Role, db, s.dir)
}

type noBinariesError struct{ msg string }

func (e *noBinariesError) Error() string { return e.msg }

// binDir finds the newest /usr/lib/postgresql/*/bin holding initdb, or
// the directory of an initdb on PATH.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", &noBinariesError{"no PostgreSQL server binaries (initdb) in /usr/lib/postgresql/*/bin or on PATH"}
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// start initialises a cluster in a new temporary directory and starts it.
func start() (*server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	// Under root, /tmp itself: $TMPDIR may be a 0700 directory of root's
	// that nobody cannot enter, and the socket path must stay short.
	tmp := ""
	if os.Geteuid() == 0 {
		tmp = "/tmp"
	}
	dir, err := os.MkdirTemp(tmp, "grove-pg-")
	if err != nil {
		return nil, err
	}
	s := &server{bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("PostgreSQL refuses root and there is no user nobody: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)} // and no supplementary groups
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("give %s to nobody: %w", dir, err)
		}
	}
	data := filepath.Join(dir, "data")
	if err := s.run("initdb", "-D", data, "-U", Role, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	opts := fmt.Sprintf("-k %s -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", dir)
	if err := s.run("pg_ctl", "start", "-w", "-t", "120", "-D", data, "-l", filepath.Join(dir, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("%w\n%s", err, log)
	}
	return s, nil
}

// run runs a server binary as the cluster's owner.
func (s *server) run(name string, args ...string) error {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %w\n%s", name, args, err, out)
	}
	return nil
}

// stop shuts the server down at once and removes its directory.
func (s *server) stop() {
	_ = s.run("pg_ctl", "stop", "-m", "immediate", "-w", "-D", filepath.Join(s.dir, "data"))
	os.RemoveAll(s.dir)
}
