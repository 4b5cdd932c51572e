package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
)

// filesPerDir is how many files a leaf directory of the synthetic repo holds;
// directories fan out 16 ways above the leaves.
const filesPerDir = 16

// buildRepo creates a git repository at dir holding n small text files
// spread over nested directories (src/dX/dY/.../fNNNNNN.txt), committed once
// on branch main by git fast-import (so the objects are in one pack, as in a
// real clone), then checked out. It returns the commit id.
func buildRepo(ctx context.Context, r runner, dir string, n int) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if _, err := r.git(ctx, dir, "init", "-q", "-b", "main"); err != nil {
		return "", err
	}
	if _, err := r.gitIn(ctx, dir, bytes.NewReader(fastImportStream(n)), "fast-import", "--quiet"); err != nil {
		return "", err
	}
	if _, err := r.git(ctx, dir, "reset", "-q", "--hard", "main"); err != nil {
		return "", err
	}
	out, err := r.git(ctx, dir, "rev-parse", "--verify", "HEAD")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// fastImportStream is the fast-import input for one commit on main with n
// files and a README.
func fastImportStream(n int) []byte {
	var b bytes.Buffer
	b.Grow(n * 200)
	msg := fmt.Sprintf("synthetic repository: %d files\n", n)
	fmt.Fprintf(&b, "commit refs/heads/main\n")
	fmt.Fprintf(&b, "author grove-bench <bench@grove.invalid> 1704067200 +0000\n")
	fmt.Fprintf(&b, "committer grove-bench <bench@grove.invalid> 1704067200 +0000\n")
	fmt.Fprintf(&b, "data %d\n%s\n", len(msg), msg)
	blob := func(path, content string) {
		fmt.Fprintf(&b, "M 100644 inline %s\ndata %d\n%s\n", path, len(content), content)
	}
	blob("README.md", "# grove-bench\n\nA synthetic repository for the grove benchmark.\n")
	for i := range n {
		blob(filePath(i, n), fileContent(i))
	}
	return b.Bytes()
}

// filePath names file i of n: leaves of filesPerDir files under a 16-way
// tree just deep enough for n files, at least one level.
func filePath(i, n int) string {
	leaves := max((n+filesPerDir-1)/filesPerDir, 1)
	depth := 1
	for c := 16; c < leaves; c *= 16 {
		depth++
	}
	leaf := i / filesPerDir
	parts := make([]string, depth)
	for d := depth - 1; d >= 0; d-- {
		parts[d] = fmt.Sprintf("d%x", leaf%16)
		leaf /= 16
	}
	return "src/" + strings.Join(parts, "/") + fmt.Sprintf("/f%06d.txt", i)
}

// fileContent is a few distinct lines of text (distinct blobs, like a real
// tree).
func fileContent(i int) string {
	return fmt.Sprintf("// file %d of the synthetic repository\npackage bench\n\n// Value%d is filler so the file looks like source.\nconst Value%d = %d\n",
		i, i, i, i*7919%100003)
}
