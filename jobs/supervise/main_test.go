package supervise

import (
	"fmt"
	"os"
	"testing"
)

// TestMain lets the test binary stand in for the programs the tests run:
// `supervise DIR` (the sandbox tests' supervisor) and, with
// GROVE_TEST_WAIT_ON, a program blocked on its terminal (the tty tests),
// and with GROVE_TEST_DIAL a client that types into a run's terminal.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "supervise" {
		if err := MainArg(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if dir := os.Getenv("GROVE_TEST_DIAL"); dir != "" {
		dialAndType(dir)
		os.Exit(0)
	}
	if kind := os.Getenv("GROVE_TEST_WAIT_ON"); kind != "" {
		waitOn(kind)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
