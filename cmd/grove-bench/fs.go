package main

import (
	"fmt"
	"os"
	"syscall"

	"github.com/grove-dev/grove/gitops"
)

// Filesystem magic numbers (statfs f_type) the report names.
var fsNames = map[int64]string{
	0x01021994: "tmpfs",
	0xEF53:     "ext4",
	0x58465342: "xfs",
	0x9123683E: "btrfs",
	0x794C7630: "overlayfs",
	0x2FC12FC1: "zfs",
	0x6969:     "nfs",
}

// fsType names the filesystem holding path ("0x..." if unknown, "" on error).
func fsType(path string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return ""
	}
	if n, ok := fsNames[int64(st.Type)]; ok {
		return n
	}
	return fmt.Sprintf("0x%x", st.Type)
}

// shmDir is where the default run works when it can: checkouts on a
// disk-backed filesystem measure the disk (and, on ext4 without a journal,
// its inode allocator: creating files where many were just deleted slows
// to ~1 ms a file, so a benchmark that adds and removes 10k-file worktrees
// in a loop slows itself down tenfold), while the harness is after grove's
// overhead over git.
const shmDir = "/dev/shm"

// pickDir chooses where the temporary directory goes: --dir if given, else
// $TMPDIR if set, else /dev/shm when it is a writable tmpfs with room for
// the run, else the system temp dir.
func pickDir(flagged string, files, concurrency, tasks int) string {
	if flagged != "" {
		return flagged
	}
	if d := os.Getenv("TMPDIR"); d != "" {
		return d
	}
	var st syscall.Statfs_t
	if syscall.Statfs(shmDir, &st) == nil && fsType(shmDir) == "tmpfs" && syscall.Access(shmDir, 2 /* W_OK */) == nil {
		// A small file costs a page; the repo, its checkout and up to
		// 2·concurrency worktrees exist at once, and grove's trash keeps
		// every task's removed worktree for the run, plus slack.
		need := uint64(files)*4096*uint64(2*concurrency+3+tasks) + 256<<20
		if st.Bavail*uint64(st.Bsize) > need {
			return shmDir
		}
	}
	return os.TempDir()
}

// diskUsage is the disk the tree at dir holds (gitops.DiskUsage: allocated
// blocks, each inode once) and how many entries it has at its top (0, 0 if
// it does not exist).
func diskUsage(dir string) (bytes int64, entries int) {
	if ents, err := os.ReadDir(dir); err == nil {
		entries = len(ents)
	}
	return gitops.DiskUsage(dir), entries
}
