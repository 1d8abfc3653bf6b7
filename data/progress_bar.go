//go:build !js

package data

import (
	"fmt"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
)

// terminalBar draws the live bar with schollz/progressbar. Kept out of the
// browser build, where there is no terminal and the library would pull in
// net/http.
type terminalBar struct {
	what string
	pb   *progressbar.ProgressBar
}

// newTerminalBar returns nil when stderr is not a terminal (a character
// device; /dev/null counts too, harmlessly).
func newTerminalBar(what string, total int) bar {
	if fi, err := os.Stderr.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	if total <= 0 {
		total = -1 // a spinner
	}
	pb := progressbar.NewOptions(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionShowDescriptionAtLineEnd(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(os.Stderr) }),
	)
	return &terminalBar{what, pb}
}

func (t *terminalBar) set(count int, extra string) {
	desc := t.what
	if extra != "" {
		desc += " " + extra
	}
	t.pb.Describe(desc)
	t.pb.Set(count)
}

func (t *terminalBar) finish() { t.pb.Finish() }
