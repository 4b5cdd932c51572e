package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// jsonRaw embeds a stored JSON document as is.
func jsonRaw(s string) json.RawMessage { return json.RawMessage(s) }

// shellQuote renders argv as one line a POSIX shell (bash, zsh) reads back
// as the same words: a plain word as is, others in single quotes, and a
// word holding a control character (a newline, a tab, an escape) in $'...'
// with the character escaped, so no argument can break a line or a layout.
func shellQuote(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = quoteWord(a)
	}
	return strings.Join(out, " ")
}

func quoteWord(s string) string {
	if s == "" {
		return "''"
	}
	plain, control := true, false
	for _, r := range s {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError:
			control = true
		case !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r)):
			plain = false
		}
	}
	switch {
	case control:
		return ansiCQuote(s)
	case plain:
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ansiCQuote is bash's $'...' quoting: backslash escapes for quotes,
// backslashes and control characters; invalid UTF-8 bytes as \xHH.
func ansiCQuote(s string) string {
	var b strings.Builder
	b.WriteString("$'")
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\'' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r < 0xa0:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	b.WriteByte('\'')
	return b.String()
}

// oneLine makes s safe for one line of a table: control characters (a
// newline) shown escaped.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return s
	}
	q := ansiCQuote(s)
	return q[2 : len(q)-1]
}
