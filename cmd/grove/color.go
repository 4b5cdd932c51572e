package main

import (
	"io"
	"os"

	"github.com/grove-dev/grove"
)

// ANSI colours grove uses: states and errors, on a terminal only.
const (
	colorRed    = "31"
	colorGreen  = "32"
	colorYellow = "33"
	colorBlue   = "34"
	colorGray   = "90"
	// colorDefault is the terminal's own colour: a header painted with it
	// is as wide, in bytes, as a painted cell below it (tabwriter counts
	// bytes).
	colorDefault = "39"
)

// painter colours text written to one writer, or leaves it alone.
type painter struct{ on bool }

// newPainter colours when w is a terminal and NO_COLOR is unset or empty
// (https://no-color.org); CLICOLOR_FORCE=1 colours a pipe too (NO_COLOR
// still wins). TERM=dumb never gets colour.
func newPainter(w io.Writer) painter {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return painter{}
	}
	if f := os.Getenv("CLICOLOR_FORCE"); f != "" && f != "0" {
		return painter{on: true}
	}
	return painter{on: isTerminal(w)}
}

// paint wraps s in colour c when p is on.
func (p painter) paint(c, s string) string {
	if !p.on || c == "" {
		return s
	}
	return "\x1b[" + c + "m" + s + "\x1b[0m"
}

// stateColor is the colour of a task state: green for applied, red for
// what went wrong, yellow for what waits on a person, blue while moving,
// gray once over without an outcome.
func stateColor(s grove.TaskState) string {
	switch s {
	case grove.StateApplied:
		return colorGreen
	case grove.StateFailed, grove.StateConflict, grove.StateCanceled:
		return colorRed
	case grove.StateReview:
		return colorYellow
	case grove.StateClosed, grove.StateDiscarded:
		return colorGray
	}
	return colorBlue
}

// state paints a task state.
func (p painter) state(s grove.TaskState) string { return p.paint(stateColor(s), string(s)) }

// waitingState is state(s), with " (waiting)" when a terminal agent waits
// for input.
func (p painter) waitingState(s grove.TaskState, waiting bool) string {
	if waiting {
		return p.state(s) + " (waiting)"
	}
	return p.state(s)
}
