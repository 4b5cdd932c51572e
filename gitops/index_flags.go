package gitops

// Reading the assume-unchanged and skip-worktree bits of a worktree's
// index file without a git process (what `git ls-files -v` prints as a
// lowercase tag and as "S"), for the at-risk gate.
//
// The format is git's index-format.txt, versions 2 to 4. A split index
// ("link" extension: the entries here are only part of the truth), a
// sparse index ("sdir": directories stand for many files), an unknown
// version or anything that does not parse exactly is not answered here,
// and the caller runs git.

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
)

// hiddenEntry is an index entry whose edits git may not look at.
type hiddenEntry struct {
	name         string
	assumeValid  bool // `update-index --assume-unchanged`
	skipWorktree bool // sparse checkout or `update-index --skip-worktree`
}

// Index entry flag bits (index-format.txt).
const (
	indexAssumeValid  = 0x8000
	indexExtended     = 0x4000
	indexNameMask     = 0x0fff
	indexSkipWorktree = 0x4000 // in the extended flags
)

// readHiddenEntries returns the entries of the index file at path that
// have the assume-valid or skip-worktree bit, for a repository whose
// object ids are hashLen bytes (20 for SHA-1, 32 for SHA-256). known is
// false when git must answer.
func readHiddenEntries(path string, hashLen int) (hidden []hiddenEntry, known bool) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 12+hashLen || string(b[:4]) != "DIRC" {
		return nil, false
	}
	version := binary.BigEndian.Uint32(b[4:8])
	if version < 2 || version > 4 {
		return nil, false
	}
	count := binary.BigEndian.Uint32(b[8:12])
	end := len(b) - hashLen // the trailing checksum
	off := 12
	fixed := 40 + hashLen // stat data and object id
	var prev []byte       // version 4: the previous entry's name
	for range count {
		if off+fixed+2 > end {
			return nil, false
		}
		start := off
		flags := binary.BigEndian.Uint16(b[off+fixed:])
		off += fixed + 2
		var ext uint16
		if flags&indexExtended != 0 {
			if version < 3 || off+2 > end {
				return nil, false
			}
			ext = binary.BigEndian.Uint16(b[off:])
			off += 2
		}
		var name []byte
		if version == 4 {
			strip, n := indexVarint(b[off:end])
			if n == 0 || strip > uint64(len(prev)) {
				return nil, false
			}
			off += n
			nul := bytes.IndexByte(b[off:end], 0)
			if nul < 0 {
				return nil, false
			}
			name = append(prev[:len(prev)-int(strip):len(prev)-int(strip)], b[off:off+nul]...)
			off += nul + 1
			prev = name
		} else {
			nul := bytes.IndexByte(b[off:end], 0)
			if nul < 0 {
				return nil, false
			}
			name = b[off : off+nul]
			// Entries are padded with 1 to 8 NULs to a multiple of 8 bytes.
			off = start + (off-start+nul+8)&^7
			if off > end {
				return nil, false
			}
		}
		if n := int(flags & indexNameMask); n != indexNameMask && n != len(name) {
			return nil, false
		}
		if len(name) == 0 {
			return nil, false
		}
		av, sw := flags&indexAssumeValid != 0, ext&indexSkipWorktree != 0
		if av || sw {
			hidden = append(hidden, hiddenEntry{name: string(name), assumeValid: av, skipWorktree: sw})
		}
	}
	// Extensions: refuse the two that change what the entries mean.
	for off+8 <= end {
		sig := string(b[off : off+4])
		size := int(binary.BigEndian.Uint32(b[off+4:]))
		if sig == "link" || sig == "sdir" {
			return nil, false
		}
		off += 8
		if size < 0 || off+size > end {
			return nil, false
		}
		off += size
	}
	return hidden, off == end
}

// indexVarint decodes git's offset varint (varint.c) and returns its
// value and length; length 0 means malformed.
func indexVarint(b []byte) (uint64, int) {
	if len(b) == 0 {
		return 0, 0
	}
	c := b[0]
	val := uint64(c & 0x7f)
	n := 1
	for c&0x80 != 0 {
		if n >= len(b) || n > 9 {
			return 0, 0
		}
		val++
		c = b[n]
		n++
		val = val<<7 | uint64(c&0x7f)
	}
	return val, n
}

// objectHashLen returns the object id length in bytes of the repository
// whose common dir is commonDir, read from its config
// (extensions.objectFormat); ok is false when the config cannot be read.
func objectHashLen(commonDir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(commonDir, "config"))
	if err != nil {
		return 0, false
	}
	if !bytes.Contains(bytes.ToLower(b), []byte("objectformat")) {
		return 20, true
	}
	// Rare enough (SHA-256 repositories) to leave to git.
	return 0, false
}
