package jobs

import (
	"context"
	"regexp"
	"testing"

	"github.com/riverqueue/river/rivertype"
)

// Queue names are valid for River and distinct for distinct hosts, also
// when folding would make them equal or the name is long.
func TestHostQueue(t *testing.T) {
	valid := regexp.MustCompile(`^(?:[a-z0-9])+(?:[_|\-]?[a-z0-9]+)*$`) // River's nameRegex
	seen := map[string]string{}
	long := "a-very-long-host-name-that-goes-on.and-on.example.internal.corp"
	for _, h := range []string{"box-a", "web.1", "web_1", "Web-1", "web-1", long, long + "x", "..", "ÄÖ"} {
		q := HostQueue(QueueMaintenance, h)
		if !valid.MatchString(q) || len(q) > 64 {
			t.Errorf("HostQueue(%q) = %q: not a valid River queue name", h, q)
		}
		if other, dup := seen[q]; dup {
			t.Errorf("hosts %q and %q share queue %q", other, h, q)
		}
		seen[q] = h
	}
	if q := HostQueue(QueueGit, "box-a"); q != "git_box-a" {
		t.Errorf("a plain name is kept: got %q", q)
	}
}

// On PostgreSQL a job on a host-bound queue (git, agent, cleanup,
// maintenance, backup) lands in this host's instance of it, with a unique
// key of its own host; other queues are left alone.
func TestHostRouter(t *testing.T) {
	r := &hostRouter{host: "box-a"}
	backup := &rivertype.JobInsertParams{Queue: QueueBackup, UniqueKey: []byte("k")}
	maint := &rivertype.JobInsertParams{Queue: QueueMaintenance}
	other := &rivertype.JobInsertParams{Queue: "elsewhere", UniqueKey: []byte("k")}
	_, err := r.InsertMany(context.Background(), []*rivertype.JobInsertParams{backup, maint, other},
		func(context.Context) ([]*rivertype.JobInsertResult, error) { return nil, nil })
	if err != nil {
		t.Fatal(err)
	}
	if backup.Queue != "backup_box-a" || string(backup.UniqueKey) != "k@box-a" {
		t.Errorf("backup job: queue %q, unique key %q", backup.Queue, backup.UniqueKey)
	}
	if maint.Queue != "maintenance_box-a" || maint.UniqueKey != nil {
		t.Errorf("maintenance job: queue %q, unique key %q", maint.Queue, maint.UniqueKey)
	}
	if other.Queue != "elsewhere" || string(other.UniqueKey) != "k" {
		t.Errorf("other job changed: queue %q, unique key %q", other.Queue, other.UniqueKey)
	}
}
