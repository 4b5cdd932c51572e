package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/grove-dev/grove/gitops"
)

// addSettings commits a .grove.toml to the benchmark repository: a setup
// that sleeps cfg.setupSeconds, and with cfg.copyMB an ignored directory
// (bench-cache/, 1 MiB files) copied into each worktree and kept by the
// gate; one copy of it is timed into rep. It returns the new commit.
func addSettings(ctx context.Context, r runner, repo string, cfg config, rep *report) (string, error) {
	var toml strings.Builder
	if cfg.setupSeconds > 0 {
		fmt.Fprintf(&toml, "setup = [\"sleep %g\"]\n", cfg.setupSeconds)
		rep.SetupSeconds = cfg.setupSeconds
	}
	if cfg.copyMB > 0 {
		toml.WriteString("copy = [\"bench-cache\"]\nkeep_ignored = [\"bench-cache\"]\n")
		if err := os.WriteFile(filepath.Join(repo, ".gitignore"), []byte("/bench-cache/\n"), 0o644); err != nil {
			return "", err
		}
		dir := filepath.Join(repo, "bench-cache")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		chunk := make([]byte, 1<<20)
		for i := range chunk {
			chunk[i] = byte(i * 7)
		}
		for i := range cfg.copyMB {
			chunk[0] = byte(i)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("blob-%04d.bin", i)), chunk, 0o644); err != nil {
				return "", err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(repo, ".grove.toml"), []byte(toml.String()), 0o644); err != nil {
		return "", err
	}
	if _, err := r.git(ctx, repo, "add", "-A"); err != nil {
		return "", err
	}
	if _, err := r.git(ctx, repo, "-c", "user.name=grove-bench", "-c", "user.email=bench@grove.invalid", "commit", "-qm", "grove settings"); err != nil {
		return "", err
	}
	if cfg.copyMB > 0 {
		g, err := gitops.Open(ctx, repo)
		if err != nil {
			return "", err
		}
		dst, err := os.MkdirTemp(filepath.Dir(repo), "copy-probe-")
		if err != nil {
			return "", err
		}
		t0 := time.Now()
		res, err := g.CopyIgnored(ctx, dst, []string{"bench-cache"})
		rep.CopyMs = float64(time.Since(t0).Microseconds()) / 1000
		if err != nil {
			return "", err
		}
		rep.CopyBytes, rep.CopyFiles, rep.CopyCloned = res.Bytes, res.Files, res.Cloned
		if err := os.RemoveAll(dst); err != nil {
			return "", err
		}
	}
	out, err := r.git(ctx, repo, "rev-parse", "--verify", "HEAD")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}
