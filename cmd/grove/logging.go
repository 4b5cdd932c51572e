package main

import (
	"context"
	"log/slog"
	"strings"
	"time"
)

// riverChatter are the endings of River's info messages that report
// routine bookkeeping (a producer's job counts every few seconds, a
// maintenance service that ran): about 40% of an idle daemon's log. They
// are logged at debug level instead (grove serve -v shows them).
var riverChatter = []string{
	": Producer job counts",
	": Ran successfully",
	"Driver does not support listener; entering poll only mode",
}

// demoteHandler lowers River's routine info lines to debug and passes
// everything else through unchanged.
type demoteHandler struct{ slog.Handler }

// riverLogger is the logger River gets: log's handler with River's
// chatter demoted, tagged component=river.
func riverLogger(log *slog.Logger) *slog.Logger {
	return slog.New(demoteHandler{log.Handler()}).With("component", "river")
}

// Enabled keeps info enabled at any level (a record may be demoted only
// once its message is known, in Handle).
func (h demoteHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, l)
}

// Handle demotes a chatty info record to debug, dropping it unless debug
// is enabled.
func (h demoteHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo && isChatter(r.Message) {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

func (h demoteHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return demoteHandler{h.Handler.WithAttrs(as)}
}

func (h demoteHandler) WithGroup(name string) slog.Handler {
	return demoteHandler{h.Handler.WithGroup(name)}
}

func isChatter(msg string) bool {
	for _, c := range riverChatter {
		if strings.HasSuffix(msg, c) {
			return true
		}
	}
	return false
}

// readableDuration is a slog ReplaceAttr that logs a duration as Go's
// text ("1.52ms", "2m3s"), rounded to the microsecond, instead of a
// count of nanoseconds.
func readableDuration(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		d := a.Value.Duration()
		if d >= time.Microsecond || d <= -time.Microsecond {
			d = d.Round(time.Microsecond)
		}
		return slog.String(a.Key, d.String())
	}
	return a
}
