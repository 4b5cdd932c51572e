package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/grove-dev/grove/gitops"
	"github.com/grove-dev/grove/gitops/procscan"
)

// atRiskView is one line of `grove ls --at-risk --json`.
type atRiskView struct {
	TaskID     string          `json:"task_id,omitempty"`
	SessionID  string          `json:"session_id,omitempty"`
	Owner      string          `json:"owner"` // the task's state, "session <state>", or "unknown"
	Repo       string          `json:"repo"`
	Path       string          `json:"path"`
	Branch     string          `json:"branch,omitempty"`
	LastUsedAt time.Time       `json:"last_used_at"`
	Report     json.RawMessage `json:"report"` // the gate's report (gitops.Report)
}

// printAtRisk lists live workspaces with a recorded at-risk report, of
// repository repoID (0: all; -1: none).
func (a *app) printAtRisk(ctx context.Context, repoID int64, asJSON bool) error {
	ws, err := a.st.AtRiskWorkspaces(ctx)
	if err != nil {
		return err
	}
	views := []atRiskView{}
	for _, w := range ws {
		if repoID != 0 && w.RepoID != repoID {
			continue
		}
		owner := "unknown"
		switch {
		case w.SessionID != "":
			owner = "session " + w.SessionState
		case w.TaskID != "":
			owner = string(w.TaskState)
		}
		views = append(views, atRiskView{TaskID: w.TaskID, SessionID: w.SessionID, Owner: owner, Repo: w.RepoPath,
			Path: w.Path, Branch: w.Branch, LastUsedAt: w.LastUsedAt, Report: recheckProcesses(w.Path, w.AtRisk)})
	}
	if asJSON {
		return a.printJSON(views)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tOWNER\tIDLE\tPATH\tREASONS")
	now := time.Now()
	for _, v := range views {
		id := v.TaskID
		if id == "" {
			id = "-"
			if v.SessionID != "" {
				id = "session " + v.SessionID
			}
		}
		var rep gitops.Report
		reasons := string(v.Report)
		if err := json.Unmarshal(v.Report, &rep); err == nil {
			reasons = riskText(rep.Risks)
			if len(rep.Risks) == 0 {
				reasons = "none any more (re-checked now: its processes exited)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", id, v.Owner, age(now.Sub(v.LastUsedAt)), v.Path, reasons)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return a.printBackupWarning() // backup.go

}

// recheckProcesses is a recorded report with its process reason as of now:
// the pids still working in path, or no process reason when they are all
// gone (a worktree kept for a process that exited is then shown without
// it, and the reaper closes it on its next pass if its close was asked).
// A report that cannot be parsed, or a scan that fails, is shown as
// recorded.
func recheckProcesses(path, recorded string) json.RawMessage {
	var rep gitops.Report
	if err := json.Unmarshal([]byte(recorded), &rep); err != nil || !rep.Has(gitops.RiskProcess) {
		return json.RawMessage(recorded)
	}
	pids, err := procscan.In(path)
	if err != nil {
		return json.RawMessage(recorded)
	}
	risks := rep.Risks[:0:0]
	for _, r := range rep.Risks {
		if r.Reason != gitops.RiskProcess {
			risks = append(risks, r)
		} else if len(pids) > 0 {
			s := make([]string, len(pids))
			for i, p := range pids {
				s[i] = strconv.Itoa(p)
			}
			risks = append(risks, gitops.Risk{Reason: gitops.RiskProcess, Detail: "pids " + strings.Join(s, ", ")})
		}
	}
	rep.Risks = risks
	rep.Safe = len(risks) == 0
	b, err := json.Marshal(rep)
	if err != nil {
		return json.RawMessage(recorded)
	}
	return b
}
