package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/jobs"
)

func (a *app) submitCmd() *cobra.Command {
	var (
		req     jobs.SubmitRequest
		envs    []string
		apply   string
		wait    bool
		asJSON  bool
		timeout time.Duration
		sb      sandboxSubmit
	)
	c := &cobra.Command{
		Use:   "submit [flags] -- CMD [ARGS...]",
		Short: "Queue a task: run CMD in a fresh worktree of the repo",
		Long: `submit records a task and prints its id at once; the daemon creates a
worktree on branch grove/<id>/work at the base commit and runs CMD there. With
--key, submitting the same key again returns the same task.`,
		Example: `  grove submit -- my-agent --prompt "fix the flaky test"
  grove submit --repo ~/src/app --base main --apply auto --timeout 10m -- ./agent.sh
  grove submit --key job-42 --env MODEL=fast --wait -- my-agent
  grove submit --tty -- claude        # interactive: grove attach ID`,
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			if c.ArgsLenAtDash() < 0 && len(args) > 0 || c.ArgsLenAtDash() > 0 {
				return grove.Userf(grove.ErrUsage, "put the command after --, e.g. grove submit -- my-agent", "unexpected arguments before --")
			}
			req.Argv = args
			req.Apply = grove.ApplyPolicy(apply)
			req.Timeout = timeout
			req.Path = os.Getenv("PATH")
			env, err := parseEnv(envs)
			if err != nil {
				return err
			}
			req.Env = env
			tty := req.Options.TTY // --tty; the sandbox flags fill the rest
			if req.Options, err = sb.options(); err != nil {
				return err
			}
			req.Options.TTY = tty
			if req.RepoDir == "" {
				req.RepoDir = "."
			}
			if task, handled, err := a.submitViaDaemon(ctx, &req); handled {
				if err != nil {
					return err
				}
				if wait || asJSON {
					if err := a.open(ctx); err != nil {
						return err
					}
				}
				return a.submitted(ctx, task, wait, asJSON)
			}
			if err := a.open(ctx); err != nil {
				return err
			}
			task, _, err := a.intents().Submit(ctx, req)
			if err != nil {
				return err
			}
			return a.submitted(ctx, task, wait, asJSON)
		},
	}
	f := c.Flags()
	f.StringVar(&req.RepoDir, "repo", ".", "any path inside the repository's work tree")
	f.StringVar(&req.Base, "base", "", "commit or branch to start from (default: the main checkout's branch)")
	f.StringVar(&req.Key, "key", "", "idempotency key: the same key returns the same task")
	f.StringVar(&req.Session, "session", "", "run in the named session's worktree")
	f.StringVar(&req.Host, "host", "", "run on this host's repository (a shared --database; --repo is then its absolute path there)")
	f.StringVar(&apply, "apply", "manual", "manual (stop at review) or auto (apply after exit 0)")
	f.DurationVar(&timeout, "timeout", 30*time.Minute, "kill the agent after this long (0: never)")
	f.StringArrayVar(&envs, "env", nil, "K=V added to the agent's environment (repeatable)")
	f.BoolVar(&wait, "wait", false, "wait for the task and exit with the agent's exit code")
	f.BoolVar(&asJSON, "json", false, "print the task as JSON")
	f.BoolVar(&req.Options.TTY, "tty", false, "run the agent on a terminal: grove attach ID to watch and type, grove send ID TEXT from a script")
	sb.flags(c)
	return c
}

// parseEnv turns K=V flags into a map; a malformed one is a usage error.
func parseEnv(envs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, e := range envs {
		k, v, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\n\x00") || strings.ContainsRune(v, 0) {
			return nil, grove.Userf(grove.ErrUsage, "write it as --env NAME=value", "malformed --env %q", e)
		}
		out[k] = v
	}
	return out, nil
}

// submitViaDaemon hands req to the running daemon of the home (see
// jobs.SubmitViaDaemon), which records it on its warm connection. handled
// false: submit locally, with req as it is now (its id chosen, its
// repository path absolute, Resubmit set when the daemon may have recorded
// it). Tasks on another host and homes on
// PostgreSQL are always submitted locally.
func (a *app) submitViaDaemon(ctx context.Context, req *jobs.SubmitRequest) (task grove.Task, handled bool, err error) {
	if req.Host != "" || a.databaseURL() != "" {
		return task, false, nil
	}
	home, err := a.homeDir()
	if err != nil {
		return task, false, nil // a.open reports it
	}
	abs, err := filepath.Abs(req.RepoDir)
	if err != nil {
		return task, false, nil
	}
	req.RepoDir, req.ID = abs, grove.NewTaskID()
	task, handled, lost, err := jobs.SubmitViaDaemon(ctx, home, *req)
	req.Resubmit = lost // the daemon may have recorded it: not twice
	return task, handled, err
}
