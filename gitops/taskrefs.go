package gitops

import (
	"context"
	"fmt"
	"strings"
)

// RefsUnder lists the refs under prefix (e.g. "refs/grove/tasks/") with
// the objects they point at: full ref name → object id.
func (r *Repo) RefsUnder(ctx context.Context, prefix string) (map[string]string, error) {
	if !strings.HasPrefix(prefix, "refs/") || !strings.HasSuffix(prefix, "/") || !validRefName(prefix+"x") {
		return nil, fmt.Errorf("list refs: invalid prefix %q", prefix)
	}
	out, err := run(ctx, r.Root, "for-each-ref", "--format=%(objectname) %(refname)", "--", prefix)
	if err != nil {
		return nil, fmt.Errorf("list refs %s: %w", prefix, err)
	}
	refs := map[string]string{}
	for _, l := range lines(out) {
		sha, name, ok := strings.Cut(l, " ")
		if !ok || !strings.HasPrefix(name, prefix) {
			return nil, fmt.Errorf("list refs %s: unexpected line %q", prefix, l)
		}
		refs[name] = sha
	}
	return refs, nil
}

// DeleteRefIf deletes ref if it still points at old (compare-and-swap: a
// ref moved since it was read is left alone, with an error).
func (r *Repo) DeleteRefIf(ctx context.Context, ref, old string) error {
	if !validRefName(ref) || old == "" || strings.HasPrefix(old, "-") {
		return fmt.Errorf("delete ref %q at %q: invalid", ref, old)
	}
	return r.deleteRef(ctx, ref, old)
}
