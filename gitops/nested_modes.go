package gitops

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"
)

// gitReadOnly matches, relative to a repository's objects directory, the
// files git itself writes read-only (0444): loose objects and packs.
var gitReadOnly = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^([0-9a-f]{2}/[0-9a-f]{38,62}|pack/pack-[0-9a-f]+\.(pack|idx|rev|bitmap|mtimes))$`)
})

// readOnlyObjects gives the loose objects and packs under objects (a
// restored nested repository's .git/objects, whose files a snapshot can
// only record as 0644) the mode git gave them, 0444. A missing directory
// is fine.
func readOnlyObjects(objects string) error {
	err := filepath.WalkDir(objects, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(objects, p)
		if err != nil || !gitReadOnly().MatchString(filepath.ToSlash(rel)) {
			return err
		}
		return os.Chmod(p, 0o444)
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
