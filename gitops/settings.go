package gitops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/grove-dev/grove"
)

// configKey is the git config name of a setting: grove.<key> without
// underscores (git config names allow none), e.g. grove.setupinputs.
func configKey(key string) string { return "grove." + strings.ReplaceAll(key, "_", "") }

// settingOfConfig maps a git config name (lower-cased by git) back to a
// setting key; ok is false for an unknown one.
func settingOfConfig(name string) (string, bool) {
	for _, k := range grove.SettingKeys {
		if strings.EqualFold(configKey(k), name) {
			return k, true
		}
	}
	return "", false
}

// ReadSettings returns the repository's effective settings for a worktree
// at commit: .grove.toml as committed at commit (absent: the defaults),
// then every git config key grove.<key> (any scope; the per-box override),
// each value's source recorded in Settings.Sources. A malformed file or
// override is a *grove.UserError naming it.
func (r *Repo) ReadSettings(ctx context.Context, commit string) (grove.Settings, error) {
	b, absent, known := r.looseSettingsFile(commit)
	var err error
	if !known {
		b, err = run(ctx, r.Root, "cat-file", "blob", commit+":"+grove.SettingsFile)
	}
	var s grove.Settings
	switch {
	case absent:
		s, _ = grove.ParseSettings(nil, "")
	case err == nil:
		if s, err = grove.ParseSettings(b, fmt.Sprintf("%s at %.12s", grove.SettingsFile, commit)); err != nil {
			return s, err
		}
	case strings.Contains(stderrOf(err), "does not exist in"), strings.Contains(stderrOf(err), "exists on disk, but not in"):
		s, _ = grove.ParseSettings(nil, "")
	default:
		return s, fmt.Errorf("read %s at %s: %w", grove.SettingsFile, commit, err)
	}
	if err := r.applyConfig(ctx, &s); err != nil {
		return s, err
	}
	return s, s.Validate("git config")
}

// looseSettingsFile reads .grove.toml at commit from loose objects, as
// `cat-file blob commit:.grove.toml` would: absent when the commit's tree
// has no such entry, else its content when it is a loose file blob.
// known is false when git must answer (a packed object, a symbolic link
// or anything else, a commit not named by its full id).
func (r *Repo) looseSettingsFile(commit string) (content []byte, absent, known bool) {
	trees, ok := looseCommitTrees(r.CommonDir, commit)
	if !ok {
		return nil, false, false
	}
	mode, oid, found, ok := looseTreeEntry(r.CommonDir, trees[0], grove.SettingsFile)
	switch {
	case !ok:
		return nil, false, false
	case !found:
		return nil, true, true
	case mode != "100644" && mode != "100755":
		return nil, false, false
	}
	typ, body, ok := readLooseWhole(r.CommonDir, oid, 1<<20)
	if !ok || typ != "blob" {
		return nil, false, false
	}
	return body, false, true
}

// groveConfig is `git config --show-scope --get-regexp ^grove\.` in the
// main worktree ("" when no key is set), cached by configDigest: the same
// configuration texts give the same answer.
func (r *Repo) groveConfig(ctx context.Context) ([]byte, error) {
	key, cacheable := configDigest(r.Root)
	if cacheable {
		if v, ok := groveConfigCache.Load(key); ok {
			return v.([]byte), nil
		}
	}
	out, err := run(ctx, r.Root, "config", "--show-scope", "--get-regexp", `^grove\.`)
	var ge *GitError
	if errors.As(err, &ge) && ge.ExitCode == 1 {
		out, err = nil, nil // no override
	}
	if err != nil {
		return nil, fmt.Errorf("read git config grove.*: %w", err)
	}
	if cacheable {
		groveConfigCache.Store(key, out)
	}
	return out, nil
}

// groveConfigCache maps configDigest to groveConfig's answer.
var groveConfigCache sync.Map

// applyConfig overrides s with every git config key grove.<key> (any
// scope; a narrower scope replaces a wider one).
func (r *Repo) applyConfig(ctx context.Context, s *grove.Settings) error {
	out, err := r.groveConfig(ctx)
	if err != nil {
		return err
	}
	over := map[string][]string{}
	scope := map[string]string{}
	var order []string
	for _, l := range lines(out) {
		sc, rest, _ := strings.Cut(l, "\t")
		name, val, _ := strings.Cut(rest, " ")
		key, ok := settingOfConfig(name)
		if !ok {
			continue // another tool's grove.* key, or a newer grove's
		}
		if _, seen := over[key]; !seen {
			order = append(order, key)
		}
		if sc != scope[key] {
			over[key] = nil // a narrower scope (read later) replaces a wider one
			scope[key] = sc
		}
		if val != "" {
			over[key] = append(over[key], val)
		}
	}
	for _, key := range order {
		if err := s.Set(key, over[key], fmt.Sprintf("git config %s (%s)", configKey(key), scope[key])); err != nil {
			return err
		}
	}
	return nil
}

// SetSetting overrides key for this repository on this box (git config
// --local grove.<key>, one entry per value; no value sets an empty list).
// It is validated first: a bad value changes nothing.
func (r *Repo) SetSetting(ctx context.Context, key string, values []string) error {
	var s grove.Settings
	if err := s.Set(key, values, "grove repo set"); err != nil {
		return err
	}
	if err := s.Validate("grove repo set"); err != nil {
		return err
	}
	unlock, err := r.Lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := r.unsetSetting(ctx, key); err != nil {
		return err
	}
	if len(values) == 0 {
		values = []string{""}
	}
	for _, v := range values {
		if _, err := run(ctx, r.Root, "config", "--local", "--add", configKey(key), v); err != nil {
			return fmt.Errorf("set %s: %w", configKey(key), err)
		}
	}
	return nil
}

// UnsetSetting removes this box's override of key (.grove.toml applies again).
func (r *Repo) UnsetSetting(ctx context.Context, key string) error {
	if _, ok := settingOfConfig(configKey(key)); !ok {
		return grove.Userf(grove.ErrUsage, "known keys: "+strings.Join(grove.SettingKeys, ", "), "unknown setting %q", key)
	}
	unlock, err := r.Lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return r.unsetSetting(ctx, key)
}

func (r *Repo) unsetSetting(ctx context.Context, key string) error {
	_, err := run(ctx, r.Root, "config", "--local", "--unset-all", configKey(key))
	var ge *GitError
	if err == nil || (errors.As(err, &ge) && ge.ExitCode == 5) {
		return nil // 5: it was not set
	}
	return fmt.Errorf("unset %s: %w", configKey(key), err)
}

// InputIDs returns the identity of each of paths at commit (its object id,
// or "absent"): with the settings, what a setup's fingerprint is made of.
func (r *Repo) InputIDs(ctx context.Context, commit string, paths []string) (map[string]string, error) {
	ids := make(map[string]string, len(paths))
	if len(paths) == 0 {
		return ids, nil
	}
	for _, p := range paths {
		ids[p] = "absent"
	}
	args := append([]string{"ls-tree", "-z", "--full-tree", "--end-of-options", commit, "--"}, paths...)
	out, err := run(ctx, r.Root, args...)
	if err != nil {
		return nil, fmt.Errorf("read setup inputs at %s: %w", commit, err)
	}
	for _, e := range fields0(out) {
		meta, p, ok := strings.Cut(e, "\t")
		f := strings.Fields(meta)
		if !ok || len(f) < 3 {
			return nil, fmt.Errorf("unexpected ls-tree entry %q", e)
		}
		ids[p] = f[2]
	}
	return ids, nil
}

// SettingsAt returns the settings for a worktree at commit and the key
// of a setup under them (see grove.Settings.SetupKey): the settings, the
// setup inputs at commit, and the copied files of the main checkout.
func (r *Repo) SettingsAt(ctx context.Context, commit string) (grove.Settings, string, error) {
	s, err := r.ReadSettings(ctx, commit)
	if err != nil || !s.Prepares() {
		return s, "", err
	}
	ids, err := r.InputIDs(ctx, commit, s.SetupInputs)
	if err != nil {
		return s, "", err
	}
	for k, v := range CopyStamps(r.Root, s.Copy) {
		ids["copy:"+k] = v
	}
	return s, s.SetupKey(ids), nil
}
