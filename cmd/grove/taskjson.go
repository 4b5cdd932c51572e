package main

import (
	"context"
	"fmt"

	"github.com/grove-dev/grove"
)

// taskOut is a task as every --json output prints it (submit, submit
// --wait, wait, ls; show adds more): the row plus its outcome, the state of
// its worktree ("removed" once closed) and the commit its apply made.
type taskOut struct {
	grove.Task
	Worktree      string `json:"worktree,omitempty"`
	AppliedCommit string `json:"applied_commit,omitempty"`
}

// taskOuts adds their outcomes to tasks. Never nil, so an empty list
// prints as [].
func (a *app) taskOuts(ctx context.Context, tasks []grove.Task) ([]taskOut, error) {
	ids := make([]string, len(tasks))
	for i, t := range tasks {
		ids[i] = t.ID
	}
	outcomes, err := a.st.TaskOutcomes(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]taskOut, len(tasks))
	for i, t := range tasks {
		o := outcomes[t.ID]
		out[i] = taskOut{Task: t, Worktree: o.Worktree, AppliedCommit: o.AppliedCommit}
	}
	return out, nil
}

// taskOutOf is taskOuts for one task.
func (a *app) taskOutOf(ctx context.Context, t grove.Task) (taskOut, error) {
	outs, err := a.taskOuts(ctx, []grove.Task{t})
	if err != nil {
		return taskOut{}, err
	}
	return outs[0], nil
}

// submitted prints what submit says about task: its id (on stdout, or on
// stderr when stdout carries the JSON), then with wait waits for it (exit
// code = the agent's), and with asJSON prints the task as one object, the
// same shape with or without wait.
func (a *app) submitted(ctx context.Context, task grove.Task, wait, asJSON bool) error {
	idOut := a.stdout
	if asJSON && wait {
		idOut = a.stderr // stdout is for the JSON
	}
	if !asJSON || wait {
		if _, err := fmt.Fprintln(idOut, task.ID); err != nil {
			return err
		}
	}
	if wait {
		tasks, err := a.waitTasks(ctx, []string{task.ID}, !asJSON)
		if err != nil {
			return err
		}
		task = tasks[0]
	}
	if !asJSON {
		return nil
	}
	out, err := a.taskOutOf(ctx, task)
	if err != nil {
		return err
	}
	return a.printJSON(out)
}
