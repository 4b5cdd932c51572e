package jobs

import (
	"regexp"
	"testing"
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
