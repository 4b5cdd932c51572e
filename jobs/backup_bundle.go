package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/grove-dev/grove"
	"github.com/grove-dev/grove/gitops"
)

// ManifestName is the manifest's file name in a bundle directory.
const ManifestName = "manifest.json"

// manifestVersion is the format written; readers refuse others.
const manifestVersion = 1

// BundleManifest is DIR/manifest.json of grove backup --bundle DIR: every
// bundle written there, oldest first. A bundle holds the refs it lists
// (named as in a pushed backup: refs/grove-backup/<box>/<repo key>/...)
// and the objects they reach that the earlier bundles of its namespace do
// not (Prerequisites: the commits it needs from them). The refs a
// namespace holds are those of its bundles, later ones winning.
type BundleManifest struct {
	Version int            `json:"version"`
	Bundles []BundleRecord `json:"bundles"`
}

// BundleRecord is one bundle file.
type BundleRecord struct {
	File          string            `json:"file"` // name in the directory
	Namespace     string            `json:"namespace"`
	Repo          string            `json:"repo"` // the repository's path on the box
	Created       time.Time         `json:"created"`
	Size          int64             `json:"size"`
	SHA256        string            `json:"sha256"`
	Refs          map[string]string `json:"refs"`
	Prerequisites []string          `json:"prerequisites,omitempty"`
	// Uploaded: the --upload command succeeded on it (it is retried on
	// the next run until it does).
	Uploaded bool `json:"uploaded,omitempty"`
}

// refsOf are the refs the bundles of namespace ns hold ("" = every
// namespace), later bundles winning.
func (m BundleManifest) refsOf(ns string) map[string]string {
	refs := map[string]string{}
	for _, b := range m.Bundles {
		if ns == "" || b.Namespace == ns {
			for name, sha := range b.Refs {
				refs[name] = sha
			}
		}
	}
	return refs
}

// readManifest reads dir's manifest; a directory without one has an
// empty manifest.
func readManifest(dir string) (BundleManifest, error) {
	m := BundleManifest{Version: manifestVersion}
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return m, fmt.Errorf("read bundle manifest: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("read bundle manifest %s: %w", filepath.Join(dir, ManifestName), err)
	}
	if m.Version != manifestVersion {
		return m, grove.Userf(grove.ErrBadRequest, "use the grove that wrote it", "bundle manifest %s has version %d, this grove reads %d",
			filepath.Join(dir, ManifestName), m.Version, manifestVersion)
	}
	return m, nil
}

// lockBundleDir takes DIR/.grove-backup.lock (exclusive: one bundle
// backup at a time per directory); release with the returned func.
func lockBundleDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".grove-backup.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock bundle directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock bundle directory: %w", err)
	}
	return func() { f.Close() }, nil
}

// bundleDir checks --bundle DIR: made if missing, absolute.
func bundleDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("bundle directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", grove.Userf(grove.ErrBadRequest, "give a directory you can write to", "cannot use %s for bundles: %v", abs, err)
	}
	return abs, nil
}

// bundleRepo is backupRepo's bundle half: it plans against the manifest
// and, unless a dry run, writes one incremental bundle and records it.
func (d *Deps) bundleRepo(ctx context.Context, repo *gitops.Repo, rr string, ns string, live map[string]string, rep *BackupReport, m *BundleManifest) (gitops.BackupPlan, error) {
	have := m.refsOf(ns)
	plan, err := repo.PlanBundle(ctx, ns, have, live)
	if err != nil {
		return plan, err
	}
	plan.Remote = rep.Remote
	if rep.DryRun || len(plan.Refs) == 0 {
		return plan, nil
	}
	seq := 1
	for _, b := range m.Bundles {
		if b.Namespace == ns {
			seq++
		}
	}
	name := strings.ReplaceAll(strings.TrimPrefix(ns, gitops.BackupRefsRoot), "/", "-") + fmt.Sprintf("%06d.bundle", seq)
	path := filepath.Join(rep.Remote, name)
	prereq, err := repo.WriteBundle(ctx, plan, have, path)
	if err != nil {
		return plan, err
	}
	sum, size, err := sha256File(path)
	if err != nil {
		return plan, err
	}
	refs := map[string]string{}
	for _, r := range plan.Refs {
		refs[r.Name] = r.New
	}
	m.Bundles = append(m.Bundles, BundleRecord{File: name, Namespace: ns, Repo: rr, Created: d.Now().UTC(),
		Size: size, SHA256: sum, Refs: refs, Prerequisites: prereq})
	grove.Failpoint("backup.bundle-before-manifest")
	if err := writeJSONAtomic(filepath.Join(rep.Remote, ManifestName), m); err != nil {
		return plan, err
	}
	return plan, nil
}

// uploadBundles runs argv on every bundle not uploaded yet, then on the
// manifest; each success is recorded in the manifest at once.
func uploadBundles(ctx context.Context, dir string, argv []string, m *BundleManifest) error {
	if len(argv) == 0 {
		return nil
	}
	sent := false
	for i := range m.Bundles {
		if m.Bundles[i].Uploaded {
			continue
		}
		if err := upload(ctx, dir, argv, filepath.Join(dir, m.Bundles[i].File)); err != nil {
			return err
		}
		m.Bundles[i].Uploaded = true
		sent = true
		if err := writeJSONAtomic(filepath.Join(dir, ManifestName), m); err != nil {
			return err
		}
	}
	if !sent {
		return nil
	}
	return upload(ctx, dir, argv, filepath.Join(dir, ManifestName))
}

// upload runs argv (no shell) in dir with file in place of each "{}"
// argument, or appended when there is none.
func upload(ctx context.Context, dir string, argv []string, file string) error {
	args := make([]string, 0, len(argv)+1)
	placed := false
	for _, a := range argv {
		if strings.Contains(a, "{}") {
			a, placed = strings.ReplaceAll(a, "{}", file), true
		}
		args = append(args, a)
	}
	if !placed {
		args = append(args, file)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		return grove.Userf(grove.ErrBadRequest, "the bundle stays in the directory; the next backup uploads it again",
			"upload %s: %s: %v %s", filepath.Base(file), argv[0], err, msg)
	}
	return nil
}

// sha256File is the hex SHA-256 and the size of the file at path.
func sha256File(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("checksum %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// isBundleDir reports whether source is a directory holding a manifest.
func isBundleDir(source string) bool {
	_, err := os.Stat(filepath.Join(source, ManifestName))
	return err == nil
}

// unbundleFor reads the manifest of dir, finds id's entries (of box, if
// set) and brings the objects of every bundle of their namespace into
// repo, in the manifest's order (oldest first), each checked against its recorded SHA-256 and by
// git bundle verify. It returns the entries and the refs of every
// namespace.
func unbundleFor(ctx context.Context, repo *gitops.Repo, dir, id, box string) ([]gitops.BackupEntry, map[string]string, error) {
	dir, err := filepath.Abs(dir) // git runs in the repository
	if err != nil {
		return nil, nil, fmt.Errorf("bundle directory %s: %w", dir, err)
	}
	m, err := readManifest(dir)
	if err != nil {
		return nil, nil, err
	}
	refs := m.refsOf("")
	entries := filterBox(gitops.BackupEntries(refs, id), box)
	if len(entries) == 0 {
		return nil, refs, grove.Userf(grove.ErrNotFound, "check the id (grove ls on the box it ran on) and the directory",
			"%s holds no backup of %s", dir, id)
	}
	ns := gitops.BackupRefsRoot + entries[0].Box + "/" + entries[0].Repo + "/"
	var recs []BundleRecord
	for _, b := range m.Bundles {
		if b.Namespace == ns {
			recs = append(recs, b)
		}
	}
	for _, b := range recs {
		if !safeFileName(b.File) {
			return nil, refs, grove.Userf(grove.ErrBadRequest, "the manifest is not one grove wrote; check it",
				"bundle manifest %s names a bad file %q", filepath.Join(dir, ManifestName), b.File)
		}
		path := filepath.Join(dir, b.File)
		sum, _, err := sha256File(path)
		if err != nil {
			return nil, refs, fmt.Errorf("bundle %s: %w", b.File, err)
		}
		if sum != b.SHA256 {
			return nil, refs, grove.Userf(grove.ErrBadRequest, "fetch that file again from where it was uploaded",
				"bundle %s is damaged: its SHA-256 is %s, the manifest says %s", b.File, sum, b.SHA256)
		}
		if err := repo.Unbundle(ctx, path); err != nil {
			return nil, refs, err
		}
	}
	return entries, refs, nil
}

// filterBox keeps the entries of box ("" keeps all).
func filterBox(entries []gitops.BackupEntry, box string) []gitops.BackupEntry {
	if box == "" {
		return entries
	}
	var kept []gitops.BackupEntry
	for _, e := range entries {
		if e.Box == box {
			kept = append(kept, e)
		}
	}
	return kept
}

// safeFileName: a plain file name in the directory (no '/', no leading
// '.' or '-').
func safeFileName(name string) bool {
	return name != "" && !strings.ContainsAny(name, "/\x00") && !strings.HasPrefix(name, ".") && !strings.HasPrefix(name, "-")
}
