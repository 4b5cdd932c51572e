package jobs

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/matryer/is"

	"github.com/grove-dev/grove"
)

// Retry refuses while a process of the task's last attempt lives, found by
// its GROVE_TASK_ID even though it is in no group or directory grove knows;
// the error names the pids and the hint says what to do. Once it is gone,
// the retry goes through.
func TestRetryRefusedWhileAProcessOfTheTaskLives(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, _ := e.task(grove.StateFailed)
	client, err := NewInsertClient(e.st)
	is.NoErr(err)
	intents := &Intents{Store: e.st, Client: client, Home: e.d.Home}

	cmd := exec.Command("sleep", "600")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "GROVE_TASK_ID="+id)
	is.NoErr(cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	err = intents.Retry(e.ctx, id)
	is.True(errors.Is(err, grove.ErrConflict))
	is.True(strings.Contains(err.Error(), strconv.Itoa(cmd.Process.Pid)))
	is.True(strings.Contains(grove.HintOf(err), "kill "+strconv.Itoa(cmd.Process.Pid)))
	is.Equal(e.task0(id).State, grove.StateFailed)

	is.NoErr(cmd.Process.Kill())
	_ = cmd.Wait()
	is.NoErr(intents.Retry(e.ctx, id))
	is.Equal(e.task0(id).State, grove.StateQueued)
}

// A new attempt waits for the processes of the one before (found by its
// GROVE_TASK_ID); a first attempt has none before it and does not walk
// /proc at all.
func TestEarlierAttemptAlive(t *testing.T) {
	is := is.New(t)
	e := newReapEnv(t)
	id, _ := e.task(grove.StateFailed)
	cmd := exec.Command("sleep", "600")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "GROVE_TASK_ID="+id)
	is.NoErr(cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	task := e.task0(id)
	task.Attempt = 2
	pids, err := e.d.earlierAttemptAlive(e.ctx, task)
	is.NoErr(err)
	is.Equal(pids, []int{cmd.Process.Pid})
	task.Attempt = 1
	pids, err = e.d.earlierAttemptAlive(e.ctx, task)
	is.NoErr(err)
	is.Equal(len(pids), 0)
}
