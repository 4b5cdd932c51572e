package gitops

// Reading refs and HEADs straight from git's files backend, without a git
// process, where the answer is exact; every other case says "ask git".
//
// A git process costs 7–15 ms of CPU on a small box, and the at-risk gate,
// the retire re-check and apply read the same few refs again and again.
// What is read here is what git's own files backend reads, in its order:
// the loose file first, then packed-refs (git packs a ref by writing
// packed-refs before deleting the loose file, and deletes one from
// packed-refs before the loose file, so a reader in this order never
// misses a ref that exists throughout). Anything unusual — a reftable
// repository, a symbolic ref, a file that is not one object id, a read
// error other than "does not exist", a name with an empty, "." or ".."
// component — is not answered here, and the caller runs git.

import (
	"bytes"
	"compress/zlib"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// filesRef returns the object id the shared ref (a full name such as
// refs/heads/x or refs/stash; not a per-worktree ref) holds in the
// repository whose common dir is commonDir: ("", true) when it does not
// exist, (oid, true) when it does, and known false when git must answer.
func filesRef(commonDir, ref string) (oid string, known bool) {
	f, ok := newRefFiles(commonDir)
	if !ok {
		return "", false
	}
	return f.ref(ref)
}

// refFiles reads one repository's refs for the span of one question,
// reading packed-refs at most once.
type refFiles struct {
	common     string
	packed     []byte
	packedErr  error
	packedRead bool
}

// newRefFiles is a reader of commonDir's ref files; ok is false for a
// reftable repository.
func newRefFiles(commonDir string) (*refFiles, bool) {
	if usesReftable(commonDir) {
		return nil, false
	}
	return &refFiles{common: commonDir}, true
}

// ref is filesRef with this reader.
func (f *refFiles) ref(ref string) (oid string, known bool) {
	if !plainRefPath(ref) {
		return "", false
	}
	b, err := readSmall(filepath.Join(f.common, filepath.FromSlash(ref)))
	switch {
	case err == nil:
		oid, ok := oneObjectID(b)
		return oid, ok
	case !errors.Is(err, fs.ErrNotExist):
		return "", false // ENOTDIR, EISDIR, permissions: git decides
	}
	if !f.packedRead {
		f.packedRead = true
		f.packed, f.packedErr = os.ReadFile(filepath.Join(f.common, "packed-refs"))
	}
	return packedRef(f.packed, f.packedErr, ref)
}

// packedRef looks ref up in the packed-refs text b (read with error err;
// a missing file means no packed refs).
func packedRef(b []byte, err error, ref string) (oid string, known bool) {
	if errors.Is(err, fs.ErrNotExist) {
		return "", true
	}
	if err != nil {
		return "", false
	}
	suffix := []byte(" " + ref + "\n")
	for rest := b; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i+1], rest[i+1:]
		} else {
			line, rest = append(rest[:len(rest):len(rest)], '\n'), nil
		}
		if line[0] == '#' || line[0] == '^' || !bytes.HasSuffix(line, suffix) {
			continue
		}
		id, ok := oneObjectID(line[:len(line)-len(suffix)])
		return id, ok
	}
	return "", true
}

// readSmall reads a file of git's that holds one line (a ref, HEAD, a
// gitdir file) in fewer system calls than os.ReadFile; a longer file is
// read whole all the same.
func readSmall(path string) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	buf := make([]byte, 0, 256)
	for {
		n, err := syscall.Read(fd, buf[len(buf):cap(buf)])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
	}
}

// usesReftable reports whether the repository keeps its refs in a
// reftable (git 2.45+), which this file does not read.
func usesReftable(commonDir string) bool {
	_, err := os.Lstat(filepath.Join(commonDir, "reftable"))
	return !errors.Is(err, fs.ErrNotExist)
}

// plainRefPath reports whether ref is a name under refs/ whose components
// map one-to-one onto files: none empty, none starting with "." (which
// also rules out "." and ".."), none ending in ".lock".
func plainRefPath(ref string) bool {
	if !strings.HasPrefix(ref, "refs/") || !validRefName(ref) {
		return false
	}
	for _, c := range strings.Split(ref, "/") {
		if c == "" || strings.HasPrefix(c, ".") || strings.HasSuffix(c, ".lock") {
			return false
		}
	}
	return true
}

// oneObjectID returns b as an object id when it is exactly one (40 or 64
// lowercase hex digits) followed by optional trailing whitespace.
func oneObjectID(b []byte) (string, bool) {
	s := strings.TrimRight(string(b), " \t\r\n")
	if (len(s) != 40 && len(s) != 64) || strings.TrimLeft(s, "0123456789abcdef") != "" {
		return "", false
	}
	return s, true
}

// worktreeHeadFiles reads the HEAD of the worktree whose git dir is
// gitDir: its commit and, when it is on a branch, the branch's full ref
// name. known is false when git must answer (an unborn branch, a symbolic
// ref to anything but a plain branch, any unusual file).
func worktreeHeadFiles(commonDir, gitDir string) (head, ref string, known bool) {
	f, ok := newRefFiles(commonDir)
	if !ok {
		return "", "", false
	}
	return f.head(gitDir)
}

// head is worktreeHeadFiles with this reader.
func (f *refFiles) head(gitDir string) (head, ref string, known bool) {
	b, err := readSmall(filepath.Join(gitDir, "HEAD"))
	if err != nil {
		return "", "", false
	}
	target, sym := strings.CutPrefix(string(b), "ref: ")
	if !sym {
		oid, ok := oneObjectID(b)
		return oid, "", ok
	}
	ref = strings.TrimRight(target, " \t\r\n")
	if !strings.HasPrefix(ref, "refs/heads/") {
		return "", "", false
	}
	oid, ok := f.ref(ref)
	if !ok || oid == "" {
		return "", "", false
	}
	return oid, ref, true
}

// worktreeRefFiles lists the per-worktree refs under refs/worktree/ of the
// linked worktree whose git dir is gitDir (they are never packed: git
// keeps per-worktree refs loose in the worktree's own git dir). known is
// false when git must answer.
func worktreeRefFiles(commonDir, gitDir string) (refs []string, known bool) {
	if usesReftable(commonDir) || samePath(commonDir, gitDir) {
		return nil, false
	}
	root := filepath.Join(gitDir, "refs", "worktree")
	if _, err := os.Lstat(root); errors.Is(err, fs.ErrNotExist) {
		return nil, true
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasSuffix(d.Name(), ".lock") {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		refs = append(refs, "refs/worktree/"+filepath.ToSlash(rel))
		return nil
	})
	return refs, err == nil
}

// worktreeInfoFiles is worktreeInfo read from the files git itself reads:
// dir's .git file, the git dir's commondir and HEAD. known is false when
// git must answer: dir/.git is not a gitdir file into r's worktrees, the
// configuration could move the worktree's top elsewhere (core.worktree,
// per-worktree config, includes), or HEAD is unusual.
func (r *Repo) worktreeInfoFiles(dir string) (info wtInfo, known bool) {
	gd, err := GitDirOf(dir)
	if err != nil || !samePath(filepath.Dir(gd), filepath.Join(r.CommonDir, "worktrees")) {
		return wtInfo{}, false
	}
	cd, err := os.ReadFile(filepath.Join(gd, "commondir"))
	if err != nil {
		return wtInfo{}, false
	}
	common := strings.TrimRight(string(cd), "\r\n")
	if !filepath.IsAbs(common) {
		common = filepath.Join(gd, common)
	}
	if !samePath(common, r.CommonDir) || !topIsGitFileDir(r.CommonDir, gd) {
		return wtInfo{}, false
	}
	head, ref, ok := worktreeHeadFiles(r.CommonDir, gd)
	if !ok {
		return wtInfo{}, false
	}
	return wtInfo{gitDir: gd, head: head, branch: strings.TrimPrefix(ref, "refs/heads/")}, true
}

// topIsGitFileDir reports whether git takes the directory holding a
// worktree's .git file as that worktree's top: true unless a
// configuration could say otherwise (core.worktree, a per-worktree
// config file, an include).
func topIsGitFileDir(commonDir, gitDir string) bool {
	return plainConfig(commonDir) && noWorktreeConfig(gitDir)
}

// plainConfig reports whether commonDir's config has no core.worktree and
// no include (either could move a worktree's top).
func plainConfig(commonDir string) bool {
	b, err := os.ReadFile(filepath.Join(commonDir, "config"))
	if err != nil {
		return false
	}
	low := bytes.ToLower(b)
	for _, s := range []string{"worktree =", "worktree=", "worktree\t", "include"} {
		if bytes.Contains(low, []byte(s)) {
			return false
		}
	}
	return true
}

// noWorktreeConfig reports whether the worktree whose git dir is gitDir
// has no config.worktree of its own.
func noWorktreeConfig(gitDir string) bool {
	_, err := os.Lstat(filepath.Join(gitDir, "config.worktree"))
	return errors.Is(err, fs.ErrNotExist)
}

// worktreesFiles is `git worktree list --porcelain` read from the files
// git reads for it (worktree.c: the main worktree, then each
// <common>/worktrees/<id> with a readable gitdir file; locked when its "locked" file exists; prunable when not locked
// and its gitdir file names a path that does not exist; sorted by path
// after the main one). known is false
// when git must answer: a layout other than <main>/.git, configuration
// that could move a worktree's top, a relative gitdir, an unborn or
// unusual HEAD.
func (r *Repo) worktreesFiles() (list []WorktreeEntry, known bool) {
	if filepath.Base(r.CommonDir) != ".git" || !topIsGitFileDir(r.CommonDir, r.CommonDir) {
		return nil, false
	}
	refs, ok := newRefFiles(r.CommonDir)
	if !ok {
		return nil, false
	}
	main := WorktreeEntry{Path: filepath.Dir(r.CommonDir)}
	head, ref, ok := refs.head(r.CommonDir)
	if !ok {
		return nil, false
	}
	main.Head, main.Branch, main.Detached = head, strings.TrimPrefix(ref, "refs/heads/"), ref == ""
	list = append(list, main)
	admin := filepath.Join(r.CommonDir, "worktrees")
	f, err := os.Open(admin)
	if errors.Is(err, fs.ErrNotExist) {
		return list, true
	}
	if err != nil {
		return nil, false
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, false
	}
	for _, id := range names {
		gd := filepath.Join(admin, id)
		b, err := readSmall(filepath.Join(gd, "gitdir"))
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
				return nil, false
			}
			continue // git skips an entry without a usable gitdir file
		}
		dotGit := strings.TrimRight(string(b), " \t\r\n")
		if !filepath.IsAbs(dotGit) || !noWorktreeConfig(gd) {
			return nil, false
		}
		w := WorktreeEntry{Path: strings.TrimSuffix(dotGit, "/.git")}
		head, ref, ok := refs.head(gd)
		if !ok {
			return nil, false
		}
		w.Head, w.Branch, w.Detached = head, strings.TrimPrefix(ref, "refs/heads/"), ref == ""
		_, lerr := os.Lstat(filepath.Join(gd, "locked"))
		w.Locked = lerr == nil
		if !w.Locked {
			_, serr := os.Stat(dotGit)
			w.Prunable = serr != nil
		}
		list = append(list, w)
	}
	// git sorts the linked worktrees by path (builtin/worktree.c pathsort).
	slices.SortFunc(list[1:], func(a, b WorktreeEntry) int { return strings.Compare(a.Path, b.Path) })
	return list, true
}

// looseObjectType returns the type ("commit", "tree", ...) of the object
// oid when it is stored loose in commonDir's object store, read from the
// object's zlib-compressed header as git does; known is false when it is
// not loose there (packed, in an alternate store) or cannot be read.
func looseObjectType(commonDir, oid string) (typ string, known bool) {
	typ, _, known = readLooseObject(commonDir, oid, 0)
	return typ, known
}

// readLooseObject reads the loose object oid of commonDir: its type and
// up to max bytes of its content (whole lines only are trustworthy if it
// is longer). ok is false when it is not loose there or does not read.
func readLooseObject(commonDir, oid string, max int) (typ, body string, ok bool) {
	zr, ok := openLoose(commonDir, oid)
	if !ok {
		return "", "", false
	}
	defer zr.Close()
	buf := make([]byte, 32+max)
	n, _ := io.ReadFull(zr, buf)
	head, rest, found := bytes.Cut(buf[:n], []byte{0})
	if !found {
		return "", "", false
	}
	typ, _, found = strings.Cut(string(head), " ")
	if !found {
		return "", "", false
	}
	switch typ {
	case "commit", "tree", "blob", "tag":
		return typ, string(rest), true
	}
	return "", "", false
}

// openLoose opens the loose object oid of commonDir for reading, inflated
// (its header first); ok is false when oid is not a full object id or the
// object is not loose there. Closing the reader closes the file.
func openLoose(commonDir, oid string) (io.ReadCloser, bool) {
	if _, ok := oneObjectID([]byte(oid)); !ok {
		return nil, false
	}
	f, err := os.Open(filepath.Join(commonDir, "objects", oid[:2], oid[2:]))
	if err != nil {
		return nil, false
	}
	zr, err := zlib.NewReader(f)
	if err != nil {
		f.Close()
		return nil, false
	}
	return looseReader{zr, f}, true
}

// looseReader is an inflating reader over its file.
type looseReader struct {
	io.ReadCloser // the zlib reader
	f             *os.File
}

func (l looseReader) Close() error {
	_ = l.ReadCloser.Close()
	return l.f.Close()
}

// looseCommitParents returns the parents of commit oid read from its loose
// object in commonDir; nil when it is not a loose commit or cannot be read
// (the caller then asks git).
func looseCommitParents(commonDir, oid string) []string {
	hdr, body, ok := readLooseObject(commonDir, oid, 4096)
	if !ok || hdr != "commit" {
		return nil
	}
	var parents []string
	for _, l := range strings.Split(body, "\n") {
		if l == "" {
			break // end of the header
		}
		if p, ok := strings.CutPrefix(l, "parent "); ok {
			if _, valid := oneObjectID([]byte(p)); !valid {
				return nil
			}
			parents = append(parents, p)
		}
	}
	return parents
}

// openFromFiles is OpenAtHead without git for the commonest case: abs is
// the top of a main worktree (abs/.git is a directory), owned like its .git
// by this user (so git's safe.directory check would pass), whose
// configuration neither moves the worktree nor says bare, and whose HEAD
// names a branch that resolves from the ref files (so it has commits).
// ok is false for anything else, and git decides.
func openFromFiles(abs string) (r *Repo, head MainHead, ok bool) {
	dotGit := filepath.Join(abs, ".git")
	st, err := os.Lstat(dotGit)
	if err != nil || !st.IsDir() {
		return nil, head, false
	}
	top, err := os.Stat(abs)
	if err != nil || !sameOwner(st, os.Geteuid()) || !sameOwner(top, os.Geteuid()) {
		return nil, head, false
	}
	for _, v := range []string{"GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR"} {
		if _, set := os.LookupEnv(v); set {
			return nil, head, false
		}
	}
	common, err := filepath.EvalSymlinks(dotGit)
	if err != nil || usesReftable(common) || !topIsGitFileDir(common, common) {
		return nil, head, false
	}
	cfg, err := os.ReadFile(filepath.Join(common, "config"))
	if err != nil {
		return nil, head, false
	}
	for _, l := range strings.Split(strings.ToLower(string(cfg)), "\n") {
		if k, v, _ := strings.Cut(strings.TrimSpace(l), "="); strings.TrimSpace(k) == "bare" && strings.TrimSpace(v) != "false" {
			return nil, head, false // core.bare set (or unreadable to this check)
		}
	}
	commit, ref, known := worktreeHeadFiles(common, common)
	if !known || ref == "" {
		return nil, head, false
	}
	root, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, head, false
	}
	return &Repo{Root: root, CommonDir: common}, MainHead{Known: true, Branch: strings.TrimPrefix(ref, "refs/heads/"), Commit: commit}, true
}

// sameOwner reports whether fi belongs to uid.
func sameOwner(fi fs.FileInfo, uid int) bool {
	s, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(s.Uid) == uid
}

// noReplacements reports whether git would read commonDir's objects as
// they are stored: no refs/replace/* (loose or packed) and no
// GIT_REPLACE_REF_BASE pointing elsewhere. Where it is false, what an
// object reads as is git's to say (`git replace`).
func noReplacements(commonDir string) bool {
	if _, set := os.LookupEnv("GIT_REPLACE_REF_BASE"); set || usesReftable(commonDir) {
		return false // (a reftable repository's replace refs are not files)
	}
	if _, err := os.Lstat(filepath.Join(commonDir, "refs", "replace")); !errors.Is(err, fs.ErrNotExist) {
		return false
	}
	b, err := os.ReadFile(filepath.Join(commonDir, "packed-refs"))
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	return err == nil && !bytes.Contains(b, []byte(" refs/replace/"))
}

// looseCommitTrees returns the tree of each commit of oids (full object
// ids), read from their loose objects in commonDir; ok is false when one
// is not a loose commit there or may be replaced (the caller asks git).
func looseCommitTrees(commonDir string, oids ...string) (trees []string, ok bool) {
	if !noReplacements(commonDir) {
		return nil, false
	}
	for _, oid := range oids {
		typ, body, ok := readLooseObject(commonDir, oid, 128)
		if !ok || typ != "commit" {
			return nil, false
		}
		line, _, _ := strings.Cut(body, "\n")
		tree, found := strings.CutPrefix(line, "tree ")
		if _, valid := oneObjectID([]byte(tree)); !found || !valid || len(tree) != len(oid) {
			return nil, false
		}
		trees = append(trees, tree)
	}
	return trees, true
}

// readLooseWhole reads the whole loose object oid of commonDir when its
// content is at most max bytes: its type and content. ok is false when it
// is not loose there, is larger, or does not read.
func readLooseWhole(commonDir, oid string, max int) (typ string, body []byte, ok bool) {
	zr, ok := openLoose(commonDir, oid)
	if !ok {
		return "", nil, false
	}
	defer zr.Close()
	b, err := io.ReadAll(io.LimitReader(zr, int64(max)+32))
	if err != nil {
		return "", nil, false
	}
	head, body, found := bytes.Cut(b, []byte{0})
	if !found {
		return "", nil, false
	}
	t, size, found := strings.Cut(string(head), " ")
	if n, err := strconv.Atoi(size); !found || err != nil || n != len(body) || n > max {
		return "", nil, false // larger than max (cut short), or not what the header says
	}
	return t, body, true
}

// looseTreeEntry looks name up in the loose tree object tree of
// commonDir (a tree looseCommitTrees gave, which checked that no object
// is replaced): its mode and object id, or found false when the tree has
// no such entry. ok is false when the tree is not loose there or does not
// read (the caller asks git).
func looseTreeEntry(commonDir, tree, name string) (mode, oid string, found, ok bool) {
	typ, body, read := readLooseWhole(commonDir, tree, 4<<20)
	if !read || typ != "tree" {
		return "", "", false, false
	}
	idLen := len(tree) / 2 // raw bytes of an id: 20 (SHA-1) or 32 (SHA-256)
	for rest := body; len(rest) > 0; {
		sp := bytes.IndexByte(rest, ' ')
		nul := bytes.IndexByte(rest, 0)
		if sp < 0 || nul < sp || len(rest) < nul+1+idLen {
			return "", "", false, false // malformed
		}
		m, n, raw := rest[:sp], rest[sp+1:nul], rest[nul+1:nul+1+idLen]
		rest = rest[nul+1+idLen:]
		if string(n) == name {
			return string(m), hex.EncodeToString(raw), true, true
		}
	}
	return "", "", false, true
}
