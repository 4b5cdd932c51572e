package grove

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// SettingsFile is the per-repository settings file, at the root of the
// repository, read at a task's base commit (committed, so a team shares it).
const SettingsFile = ".grove.toml"

// DefaultSetupTimeout bounds each setup command when the settings set none.
const DefaultSetupTimeout = 10 * time.Minute

// Settings are a repository's effective settings: .grove.toml at a commit,
// overridden per box by git config keys grove.* (see gitops.ReadSettings).
// The zero value is "nothing to prepare".
type Settings struct {
	// Setup are shell command lines run in order, each with `sh -c`, in a
	// new worktree before its agent starts; the first failure stops them.
	Setup []string `json:"setup"`
	// Copy are patterns (filepath.Match syntax, relative to the root, '/'
	// separated) of ignored files and directories copied from the main
	// checkout into each new worktree, before setup runs.
	Copy []string `json:"copy"`
	// SetupInputs are files (paths relative to the root) whose content at
	// the worktree's commit decides whether an earlier setup still holds:
	// a warm-pool entry set up with the same settings and the same inputs
	// is used without running setup again.
	SetupInputs []string `json:"setup_inputs"`
	// SetupTimeout bounds each setup command (0: DefaultSetupTimeout).
	SetupTimeout time.Duration `json:"setup_timeout_ns"`
	// KeepIgnored are the ignored paths the at-risk gate treats as
	// reproducible (deleted without a snapshot); nil: the gate's default
	// list (gitops.DefaultKeepIgnored).
	KeepIgnored []string `json:"keep_ignored"`
	// AllowWrite are absolute paths every sandboxed agent of the
	// repository may write besides its worktree. Box-only: it comes from
	// git config grove.allowWrite (`grove repo set allow_write PATH`),
	// never from .grove.toml, which an agent could commit to widen the
	// sandbox of the tasks after it.
	AllowWrite []string `json:"allow_write"`
	// Sources names where each key's value came from ("default",
	// ".grove.toml at <commit>", "git config grove.<key> (local)").
	Sources map[string]string `json:"sources"`
}

// Setting keys, as written in .grove.toml (git config: grove.<key> with
// the underscore dropped and the next letter upper-cased is also accepted,
// e.g. grove.setupInputs).
const (
	KeySetup        = "setup"
	KeyCopy         = "copy"
	KeySetupInputs  = "setup_inputs"
	KeySetupTimeout = "setup_timeout"
	KeyKeepIgnored  = "keep_ignored"
	KeyAllowWrite   = "allow_write"
)

// SettingKeys lists every key, in display order.
var SettingKeys = []string{KeySetup, KeyCopy, KeySetupInputs, KeySetupTimeout, KeyKeepIgnored, KeyAllowWrite}

// BoxOnly reports whether key may be set only on the box (git config),
// not in the committed .grove.toml.
func BoxOnly(key string) bool { return key == KeyAllowWrite }

// fileSettings is the TOML shape of .grove.toml.
type fileSettings struct {
	Setup        []string  `toml:"setup"`
	Copy         []string  `toml:"copy"`
	SetupInputs  []string  `toml:"setup_inputs"`
	SetupTimeout string    `toml:"setup_timeout"`
	KeepIgnored  *[]string `toml:"keep_ignored"`
	AllowWrite   []string  `toml:"allow_write"`
}

// ParseSettings decodes the content of a .grove.toml; source names it in
// Sources and in errors. An unknown key is an error (a typo must not
// silently drop a setup step).
func ParseSettings(b []byte, source string) (Settings, error) {
	s := Settings{Sources: map[string]string{}}
	for _, k := range SettingKeys {
		s.Sources[k] = "default"
	}
	var f fileSettings
	md, err := toml.Decode(string(b), &f)
	if err != nil {
		return s, Userf(ErrUsage, "fix "+SettingsFile, "%s: %v", source, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return s, Userf(ErrUsage, "known keys: "+strings.Join(slices.DeleteFunc(slices.Clone(SettingKeys), BoxOnly), ", "), "%s: unknown key %s", source, strings.Join(keys, ", "))
	}
	if md.IsDefined(KeyAllowWrite) {
		return s, Userf(ErrUsage, "remove it from "+SettingsFile+" and run `grove repo set allow_write PATH` on the box",
			"%s: allow_write is a per-box setting (a committed one would let an agent widen the sandbox)", source)
	}
	set := func(key string) { s.Sources[key] = source }
	if md.IsDefined(KeySetup) {
		s.Setup = f.Setup
		set(KeySetup)
	}
	if md.IsDefined(KeyCopy) {
		s.Copy = f.Copy
		set(KeyCopy)
	}
	if md.IsDefined(KeySetupInputs) {
		s.SetupInputs = f.SetupInputs
		set(KeySetupInputs)
	}
	if md.IsDefined(KeySetupTimeout) {
		if err := s.Set(KeySetupTimeout, []string{f.SetupTimeout}, source); err != nil {
			return s, err
		}
	}
	if f.KeepIgnored != nil {
		s.KeepIgnored = *f.KeepIgnored
		if s.KeepIgnored == nil {
			s.KeepIgnored = []string{}
		}
		set(KeyKeepIgnored)
	}
	return s, s.Validate(source)
}

// Set overrides key with values (one for setup_timeout) from source.
func (s *Settings) Set(key string, values []string, source string) error {
	if s.Sources == nil {
		s.Sources = map[string]string{}
	}
	switch key {
	case KeySetup:
		s.Setup = values
	case KeyCopy:
		s.Copy = values
	case KeySetupInputs:
		s.SetupInputs = values
	case KeyKeepIgnored:
		s.KeepIgnored = append([]string{}, values...)
	case KeyAllowWrite:
		s.AllowWrite = values
	case KeySetupTimeout:
		if len(values) != 1 {
			return Userf(ErrUsage, "give one duration, e.g. 10m", "%s: %s takes one value, got %d", source, key, len(values))
		}
		d, err := time.ParseDuration(values[0])
		if err != nil || d <= 0 {
			return Userf(ErrUsage, "give a duration, e.g. 10m", "%s: %s %q is not a positive duration", source, key, values[0])
		}
		s.SetupTimeout = d
	default:
		return Userf(ErrUsage, "known keys: "+strings.Join(SettingKeys, ", "), "%s: unknown setting %q", source, key)
	}
	s.Sources[key] = source
	return nil
}

// Validate checks what can be checked without the repository: patterns
// are relative and stay inside it.
func (s Settings) Validate(source string) error {
	for _, key := range []string{KeyCopy, KeySetupInputs, KeyKeepIgnored} {
		for _, p := range s.list(key) {
			if p == "" || strings.HasPrefix(p, "/") || slices.Contains(strings.Split(p, "/"), "..") {
				return Userf(ErrUsage, "use paths relative to the repository root", "%s: %s entry %q leaves the repository", source, key, p)
			}
		}
	}
	for _, p := range s.AllowWrite {
		if !filepath.IsAbs(p) || filepath.Clean(p) == "/" {
			return Userf(ErrUsage, "give an absolute path below /, e.g. /home/me/.cache/tool", "%s: allow_write entry %q is not an absolute path below /", source, p)
		}
	}
	for _, l := range s.Setup {
		if strings.TrimSpace(l) == "" {
			return Userf(ErrUsage, "remove the empty line", "%s: setup has an empty command", source)
		}
	}
	return nil
}

func (s Settings) list(key string) []string {
	switch key {
	case KeySetup:
		return s.Setup
	case KeyCopy:
		return s.Copy
	case KeySetupInputs:
		return s.SetupInputs
	case KeyKeepIgnored:
		return s.KeepIgnored
	case KeyAllowWrite:
		return s.AllowWrite
	}
	return nil
}

// Values returns key's effective values as strings (for display).
func (s Settings) Values(key string) []string {
	if key == KeySetupTimeout {
		return []string{s.Timeout().String()}
	}
	return s.list(key)
}

// Timeout is the bound of each setup command.
func (s Settings) Timeout() time.Duration {
	if s.SetupTimeout > 0 {
		return s.SetupTimeout
	}
	return DefaultSetupTimeout
}

// Prepares reports whether a new worktree has anything to prepare (files
// to copy or commands to run).
func (s Settings) Prepares() bool { return len(s.Setup) > 0 || len(s.Copy) > 0 }

// SetupKey fingerprints a setup: the settings that shape it and inputs,
// the identities of its input files (path → blob id, or a stat of a copied
// file). A worktree set up under one key is ready for any task whose key is
// the same. "" when there is nothing to prepare.
func (s Settings) SetupKey(inputs map[string]string) string {
	if !s.Prepares() {
		return ""
	}
	h := sha256.New()
	w := func(tag string, vs []string) {
		fmt.Fprintf(h, "%s %d\n", tag, len(vs))
		for _, v := range vs {
			fmt.Fprintf(h, "%d:%s\n", len(v), v)
		}
	}
	w("setup", s.Setup)
	w("copy", s.Copy)
	w("inputs", s.SetupInputs)
	keys := make([]string, 0, len(inputs))
	for k := range inputs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w("in", []string{k, inputs[k]})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
