package gitops

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/grove-dev/grove"
)

// PlanBundle is PlanBackup against a backup made of bundles: have are the
// refs (full name in ns → object) the earlier bundles of this namespace
// hold, as their manifest lists them.
func (r *Repo) PlanBundle(ctx context.Context, ns string, have, live map[string]string) (BackupPlan, error) {
	plan := BackupPlan{Namespace: ns, Refs: []BackupRef{}}
	if !strings.HasPrefix(ns, BackupRefsRoot) || !validRefName(ns+"x") || !strings.HasSuffix(ns, "/") {
		return plan, fmt.Errorf("plan bundle: invalid namespace %q", ns)
	}
	return r.planAgainst(ctx, plan, have, live, false)
}

// WriteBundle writes plan's refs (named as in the namespace) into a new
// bundle file at path, holding the objects they reach that the objects
// of have (the earlier bundles' refs) do not: an incremental bundle whose
// prerequisites are those earlier tips. The refs are made in a temporary
// bare repository that borrows this repository's objects (alternates),
// so this repository gets no ref. The bundle is written next to path and
// renamed into place only once `git bundle verify` accepts it. It returns
// the bundle's prerequisites.
func (r *Repo) WriteBundle(ctx context.Context, plan BackupPlan, have map[string]string, path string) ([]string, error) {
	if len(plan.Refs) == 0 {
		return nil, fmt.Errorf("write bundle %s: no refs", path)
	}
	tmp, err := os.MkdirTemp("", "grove-bundle-")
	if err != nil {
		return nil, fmt.Errorf("write bundle %s: %w", path, err)
	}
	defer os.RemoveAll(tmp)
	if err := r.borrowingRepo(ctx, tmp); err != nil {
		return nil, fmt.Errorf("write bundle %s: %w", path, err)
	}
	var upd strings.Builder
	for _, ref := range plan.Refs {
		if !strings.HasPrefix(ref.Name, plan.Namespace) || !validRefName(ref.Name) || checkRev(ref.New) != nil {
			return nil, fmt.Errorf("write bundle %s: invalid ref %q at %q", path, ref.Name, ref.New)
		}
		fmt.Fprintf(&upd, "create %s %s\n", ref.Name, ref.New)
	}
	if _, err := runGit(ctx, tmp, nil, strings.NewReader(upd.String()), "update-ref", "--stdin"); err != nil {
		return nil, fmt.Errorf("write bundle %s: %w", path, err)
	}
	prereq := r.present(ctx, have)
	var revs strings.Builder
	for _, ref := range plan.Refs {
		revs.WriteString(ref.Name + "\n")
	}
	for _, p := range prereq {
		revs.WriteString("^" + p + "\n")
	}
	part := path + ".part"
	if _, err := runGit(ctx, tmp, nil, strings.NewReader(revs.String()), "-c", "pack.useSparse=false", "bundle", "create", "--quiet", part, "--stdin"); err != nil {
		os.Remove(part)
		return nil, fmt.Errorf("write bundle %s: %w", path, err)
	}
	if err := VerifyBundle(ctx, tmp, part); err != nil {
		os.Remove(part)
		return nil, err
	}
	if err := syncFile(part); err != nil {
		os.Remove(part)
		return nil, fmt.Errorf("write bundle %s: %w", path, err)
	}
	grove.Failpoint("backup.bundle-before-rename")
	if err := os.Rename(part, path); err != nil {
		os.Remove(part)
		return nil, fmt.Errorf("write bundle %s: %w", path, err)
	}
	if err := r.KeepCatalog(ctx, plan); err != nil {
		return nil, fmt.Errorf("write bundle %s: %w", path, err)
	}
	return prereq, nil
}

// borrowingRepo makes dir an empty bare repository that reads r's
// objects (objects/info/alternates) and writes none there.
func (r *Repo) borrowingRepo(ctx context.Context, dir string) error {
	if _, err := run(ctx, dir, "init", "-q", "--bare", dir); err != nil {
		return err
	}
	objects := filepath.Join(r.CommonDir, "objects")
	return os.WriteFile(filepath.Join(dir, "objects", "info", "alternates"), []byte(objects+"\n"), 0o644)
}

// VerifyBundle runs `git bundle verify` on file in the repository dir
// (which must hold the bundle's prerequisites).
func VerifyBundle(ctx context.Context, dir, file string) error {
	if _, err := run(ctx, dir, "bundle", "verify", "--quiet", file); err != nil {
		return fmt.Errorf("verify bundle %s: %w", file, err)
	}
	return nil
}

// Unbundle brings the objects of bundle file into r (no ref changes):
// its prerequisites must be here already (unbundle earlier bundles first).
func (r *Repo) Unbundle(ctx context.Context, file string) error {
	if err := VerifyBundle(ctx, r.Root, file); err != nil {
		return err
	}
	if _, err := run(ctx, r.Root, "bundle", "unbundle", file); err != nil {
		return fmt.Errorf("unbundle %s: %w", file, err)
	}
	return nil
}

// syncFile fsyncs the file at path.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
