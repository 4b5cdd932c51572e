package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/store"
)

// Shell completion (cobra's `grove completion bash|zsh|fish|powershell`
// prints the script) of task ids, session keys, task states and
// repositories, read from the home's database. Completion never creates a
// home: without one it offers nothing.

// completionLimit bounds the task ids offered: the newest ones.
const completionLimit = 200

// completeStore opens the home's store for a completion, or nil when there
// is no home yet.
func (a *app) completeStore(ctx context.Context) *store.Store {
	home, err := a.homeDir()
	if err != nil {
		return nil
	}
	if fi, err := os.Stat(home); err != nil || !fi.IsDir() {
		return nil
	}
	if err := a.open(ctx); err != nil {
		return nil
	}
	return a.st
}

// completeTasks offers task ids (newest first, each described by its state
// and command), skipping those already on the line.
func (a *app) completeTasks(c *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	st := a.completeStore(c.Context())
	if st == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	tasks, err := st.ListTasks(c.Context(), store.TaskFilter{Limit: completionLimit})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, t := range tasks {
		if strings.HasPrefix(t.ID, prefix) && !slices.Contains(args, t.ID) {
			out = append(out, fmt.Sprintf("%s\t%s %s", t.ID, t.State, clip(oneLine(shellQuote(t.Argv)), 40)))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeOneTask offers task ids for a command that takes one.
func (a *app) completeOneTask(c *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return a.completeTasks(c, args, prefix)
}

// completeSessions offers the keys of sessions that are not closed.
func (a *app) completeSessions(c *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
	st := a.completeStore(c.Context())
	if st == nil || len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ss, err := st.Sessions(c.Context(), false)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, s := range ss {
		if strings.HasPrefix(s.ID, prefix) {
			out = append(out, fmt.Sprintf("%s\t%s", s.ID, s.State))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeStates offers the task states.
func completeStates(_ *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	var out []string
	for _, s := range grove.AllStates {
		if strings.HasPrefix(string(s), prefix) {
			out = append(out, string(s))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeRepos offers the repositories grove knows; the shell's own
// directory completion when it knows none that match.
func (a *app) completeRepos(c *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	var out []string
	if st := a.completeStore(c.Context()); st != nil {
		if repos, err := st.Repos(c.Context()); err == nil {
			for _, r := range repos {
				if strings.HasPrefix(r.Path, prefix) {
					out = append(out, r.Path)
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, cobra.ShellCompDirectiveFilterDirs
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// addCompletions sets the completions on c and its subcommands: task ids
// for commands that take an ID, session keys for the session commands that
// take a KEY (not start: a new key), states for --state, repositories for
// --repo, task ids for --task and session keys for --session.
func (a *app) addCompletions(c *cobra.Command) {
	words := strings.Fields(c.Use)
	if len(words) > 1 && c.ValidArgsFunction == nil {
		switch {
		case words[1] == "ID...":
			c.ValidArgsFunction = a.completeTasks
		case words[1] == "ID":
			c.ValidArgsFunction = a.completeOneTask
		case words[1] == "KEY" && c.HasParent() && c.Parent().Name() == "session" && words[0] != "start":
			c.ValidArgsFunction = a.completeSessions
		}
	}
	flagFns := map[string]cobra.CompletionFunc{
		"state": completeStates, "repo": a.completeRepos, "task": a.completeTasks, "session": a.completeSessions,
	}
	for name, fn := range flagFns {
		if c.LocalNonPersistentFlags().Lookup(name) != nil {
			_ = c.RegisterFlagCompletionFunc(name, func(c *cobra.Command, _ []string, p string) ([]string, cobra.ShellCompDirective) {
				return fn(c, nil, p)
			})
		}
	}
	for _, sub := range c.Commands() {
		a.addCompletions(sub)
	}
}
