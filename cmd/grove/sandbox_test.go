package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/matryer/is"

	"github.com/grove-dev/grove/jobs/supervise"
)

// escapeAgent tries every way out of its worktree and records, one line
// per attempt, "NAME RC STDERR" in $GROVE_WORKTREE/results; then does what
// must keep working: git add + commit on its branch, go build of a real
// module, a write to $TMPDIR.
const escapeAgent = `
try() { name=$1; shift; out=$("$@" 2>&1 >/dev/null); echo "$name $? $out" | tr '\n' ' ' >> "$GROVE_WORKTREE/results"; echo >> "$GROVE_WORKTREE/results"; }
w() { echo escape > "$1"; }
a() { : >> "$1"; }
try main_checkout w "$REPO/escape.txt"
try sibling_worktree w "$SIBLING/escape.txt"
try grove_db a "$GH/grove.db"
try grove_home w "$GH/escape"
try authorized_keys a "$HOME/.ssh/authorized_keys"
try etc w /etc/grove-sandbox-probe
try branch_delete git branch -D other
try update_ref_main git update-ref refs/heads/main HEAD
try update_ref_sibling git update-ref "refs/heads/$SIBLING_BRANCH" HEAD
try tag git tag x
try pack_refs git pack-refs --all
try connect /usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', $LISTEN))"
echo box > "$BOXDIR/allowed" && echo ok > "$GROVE_WORKTREE/box_ok"
env > "$GROVE_WORKTREE/envdump"
echo tmp > "$TMPDIR/t" && echo ok > "$GROVE_WORKTREE/tmp_ok"
go build -o /dev/null ./... 2> "$GROVE_WORKTREE/build_err" && echo ok > "$GROVE_WORKTREE/build_ok"
echo agent > committed.txt
git add committed.txt && git -c user.name=Agent -c user.email=a@example.com commit -q -m "agent commit" && echo ok > "$GROVE_WORKTREE/commit_ok"
exit 0
`

// TestSandboxEscapesRefused is issue 11's "done when": each escape fails
// with a permission error, what an agent needs keeps working, and the
// task still reaches review.
func TestSandboxEscapesRefused(t *testing.T) {
	if supervise.LandlockABI() < 4 {
		t.Skip("needs Landlock ABI 4 (this machine has 7: not skipped here)")
	}
	is := is.New(t)
	h := newHarness(t)
	h.strictSandbox()
	userHome := filepath.Join(h.work, "userhome")
	is.NoErr(os.MkdirAll(filepath.Join(userHome, ".ssh"), 0o700))
	keys := filepath.Join(userHome, ".ssh", "authorized_keys")
	is.NoErr(os.WriteFile(keys, []byte("ssh-ed25519 AAAA user\n"), 0o600))
	t.Cleanup(func() { os.Remove("/etc/grove-sandbox-probe") })
	is.NoErr(os.WriteFile(filepath.Join(h.repo, "go.mod"), []byte("module example.com/m\n\ngo 1.21\n"), 0o644))
	is.NoErr(os.WriteFile(filepath.Join(h.repo, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644))
	h.git("add", "-A")
	h.git("commit", "-q", "-m", "module")
	h.git("branch", "other")
	mainBefore := strings.TrimSpace(h.git("rev-parse", "main"))

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	is.NoErr(err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	// A secret only the daemon has must not reach the agent.
	base := h.env
	h.env = append(append([]string{}, base...), "DAEMON_SECRET=s3cret")
	h.startDaemon()
	h.env = append(append([]string{}, base...), "HOME="+userHome, "GOCACHE="+goEnv(t, "GOCACHE"), "LC_TIME=C.UTF-8")

	sib := h.mustGrove("submit", "--repo", h.repo, "--", "sh", "-c", "echo sib > sib.txt")
	h.mustGrove("wait", sib)
	var sv taskView
	is.NoErr(json.Unmarshal([]byte(h.mustGrove("show", "--json", sib)), &sv))
	is.True(sv.Workspace != nil)
	is.Equal(sv.Workspace.Branch, "grove/"+sib+"/work") // each task's branch in its own directory
	sibTip := strings.TrimSpace(h.git("rev-parse", "refs/heads/"+sv.Workspace.Branch))

	// A path the repository's box-only setting allows (grove repo set).
	boxDir := filepath.Join(h.work, "boxallowed")
	is.NoErr(os.MkdirAll(boxDir, 0o755))
	h.mustGrove("repo", "set", "--repo", h.repo, "allow_write", boxDir)

	agent := h.writeAgent("escape.sh", escapeAgent)
	id := h.mustGrove("submit", "--repo", h.repo, "--net", "none", "--pass-env", "GOCACHE", "--env", "BOXDIR="+boxDir,
		"--env", "REPO="+h.repo, "--env", "SIBLING="+sv.Workspace.Path, "--env", "SIBLING_BRANCH="+sv.Workspace.Branch,
		"--env", "GH="+h.home, "--env", fmt.Sprintf("LISTEN=%d", ln.Addr().(*net.TCPAddr).Port), "--", agent)
	out, errOut, err := h.grove("wait", id)
	is.True(err == nil) // the agent's own exit (0): denials are not a grove failure
	t.Log(out, errOut)
	var v taskView
	is.NoErr(json.Unmarshal([]byte(h.mustGrove("show", "--json", id)), &v))
	is.Equal(string(v.State), "review")
	wt := v.Workspace.Path
	read := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(wt, name))
		return strings.TrimSpace(string(b))
	}
	results := map[string]string{}
	for _, l := range strings.Split(read("results"), "\n") {
		name, rest, _ := strings.Cut(l, " ")
		results[name] = rest
	}
	for _, name := range []string{"main_checkout", "sibling_worktree", "grove_db", "grove_home", "authorized_keys",
		"etc", "branch_delete", "update_ref_main", "update_ref_sibling", "tag", "pack_refs", "connect"} {
		r, ok := results[name]
		if !ok || strings.HasPrefix(r, "0 ") || !(strings.Contains(r, "Permission denied") || strings.Contains(r, "PermissionError")) {
			t.Errorf("escape %s was not refused with a permission error: %q", name, r)
		}
	}
	// Nothing outside moved.
	is.Equal(strings.TrimSpace(h.git("rev-parse", "main")), mainBefore)
	is.Equal(strings.TrimSpace(h.git("rev-parse", "refs/heads/"+sv.Workspace.Branch)), sibTip)
	is.Equal(strings.TrimSpace(h.git("rev-parse", "other")), mainBefore)
	is.True(exec.Command("git", "-C", h.repo, "rev-parse", "-q", "--verify", "refs/tags/x").Run() != nil)
	for _, p := range []string{filepath.Join(h.repo, "escape.txt"), filepath.Join(sv.Workspace.Path, "escape.txt"),
		filepath.Join(h.home, "escape"), "/etc/grove-sandbox-probe"} {
		_, err := os.Stat(p)
		is.True(os.IsNotExist(err))
	}
	b, _ := os.ReadFile(keys)
	is.Equal(string(b), "ssh-ed25519 AAAA user\n")
	// What an agent needs worked.
	is.Equal(read("tmp_ok"), "ok")
	is.Equal(read("build_ok"), "ok")
	is.Equal(read("commit_ok"), "ok")
	is.Equal(read("box_ok"), "ok") // grove repo set allow_write
	env := read("envdump")
	is.True(!strings.Contains(env, "DAEMON_SECRET"))
	is.True(strings.Contains(env, "LC_TIME=C.UTF-8"))
	is.True(strings.Contains(env, "HOME="+userHome))
	is.True(strings.Contains(env, "TMPDIR="+filepath.Join(v.Run.Dir, "tmp")))
	// The agent's commit is on its branch, its objects in the shared store,
	// the private store unlisted.
	log := h.git("log", "--format=%s", "refs/heads/"+v.Workspace.Branch)
	is.True(strings.Contains(log, "agent commit"))
	alt, _ := os.ReadFile(filepath.Join(h.repo, ".git", "objects", "info", "alternates"))
	is.True(!strings.Contains(string(alt), "grove-objects"))
	h.git("fsck", "--connectivity-only", "--no-dangling")
	is.True(strings.Contains(h.mustGrove("diff", "--stat", id), "committed.txt"))
	show := h.mustGrove("show", id)
	is.True(strings.Contains(show, "on (Landlock ABI"))
	is.True(regexp.MustCompile(`(?m)^network\s+none$`).MatchString(show))
	t.Log(show)
	h.stopDaemon(syscall.SIGTERM)
}

func goEnv(t *testing.T, k string) string {
	t.Helper()
	out, err := exec.Command("go", "env", k).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// strictSandbox drops the harness's GROVE_ALLOW_WRITE (its work dir, where
// other tests' agents leave marks): only the sandbox's own policy applies.
func (h *harness) strictSandbox() {
	h.env = slices.DeleteFunc(h.env, func(kv string) bool { return strings.HasPrefix(kv, "GROVE_ALLOW_WRITE=") })
}

// TestSandboxSessionPort: under --net none, a session's task may bind the
// session's GROVE_PORT (here beside its service, both with SO_REUSEPORT)
// and no other port.
func TestSandboxSessionPort(t *testing.T) {
	if supervise.LandlockABI() < 4 {
		t.Skip("needs Landlock ABI 4 (this machine has 7: not skipped here)")
	}
	is := is.New(t)
	h := newHarness(t)
	h.strictSandbox()
	// The service is confined too: its worktree yes, the main checkout no.
	svc := h.writeAgent("svc.sh", `echo ok > "$GROVE_WORKTREE/svc_ok"
(echo escape > "`+h.repo+`/svc-escape.txt") 2> "$GROVE_WORKTREE/svc_escape_err"
exec /usr/bin/python3 -c '
import os, socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(os.environ["GROVE_PORT"]))); s.listen(8)
while True: time.sleep(1)
'`)
	agent := h.writeAgent("bind.sh", `exec /usr/bin/python3 -c '
import os, socket
def bind(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        s.bind(("127.0.0.1", p)); s.listen(1); return "ok"
    except OSError as e: return str(e.errno)
open("res", "w").write(bind(int(os.environ["GROVE_PORT"])) + " " + bind(int(os.environ["OTHER"])))
'`)
	h.startDaemon("--port-range", "21190-21199")
	is.Equal(h.mustGrove("session", "start", "p", "--repo", h.repo, "--", svc), "p live port 21190")
	id := h.mustGrove("submit", "--session", "p", "--net", "none", "--env", "OTHER=21199", "--", agent)
	h.mustGrove("wait", id)
	b, err := os.ReadFile(filepath.Join(h.sessionWT("p"), "res"))
	is.NoErr(err)
	is.Equal(string(b), "ok 13") // GROVE_PORT bound; another port refused (EACCES)
	b, err = os.ReadFile(filepath.Join(h.sessionWT("p"), "svc_ok"))
	is.NoErr(err)
	is.Equal(string(b), "ok\n")
	b, _ = os.ReadFile(filepath.Join(h.sessionWT("p"), "svc_escape_err"))
	is.True(strings.Contains(string(b), "Permission denied")) // the service's write outside was refused
	_, err = os.Stat(filepath.Join(h.repo, "svc-escape.txt"))
	is.True(os.IsNotExist(err))
	ws, err := h.store().TaskWorkspace(context.Background(), id)
	is.NoErr(err)
	is.Equal(ws.Branch, "grove/session/p/work")
	h.mustGrove("session", "stop", "p")
	h.stopDaemon(syscall.SIGTERM)
}
