package data

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress reports how far a long job is: count (of total, when known),
// rate in items per second, ETA, and an optional extra text such as loss
// terms. On a terminal it draws a live bar; elsewhere (CI logs, files, the
// browser console) it prints a plain line every Interval and one when the
// job finishes. Safe for concurrent use.
type Progress struct {
	mu       sync.Mutex
	w        io.Writer
	what     string
	total    int // <= 0: unknown
	count    int
	extra    string
	start    time.Time
	last     time.Time // when the last plain line was printed
	interval time.Duration
	bar      bar // nil in plain mode
	now      func() time.Time
}

// bar is a live terminal bar (progress_bar.go).
type bar interface {
	set(count int, extra string)
	finish()
}

// DefaultInterval is how often plain mode prints a line.
const DefaultInterval = 10 * time.Second

// NewProgress reports on stderr, with a live bar when stderr is a terminal.
// total <= 0 means the total is unknown.
func NewProgress(what string, total int) *Progress {
	p := NewPlainProgress(os.Stderr, what, total, DefaultInterval)
	p.bar = newTerminalBar(what, total)
	return p
}

// NewPlainProgress prints plain lines to w, at most one per interval.
func NewPlainProgress(w io.Writer, what string, total int, interval time.Duration) *Progress {
	p := &Progress{w: w, what: what, total: total, interval: interval, now: time.Now}
	p.start, p.last = p.now(), p.now()
	return p
}

// Add advances the count by n.
func (p *Progress) Add(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.count += n
	p.update()
}

// SetExtra sets the text shown after the rate, e.g. "loss 3.21".
func (p *Progress) SetExtra(text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.extra = text
	if p.bar != nil {
		p.bar.set(p.count, p.extra)
	}
}

// Finish completes the bar, or prints the final plain line.
func (p *Progress) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.finish()
		return
	}
	fmt.Fprintln(p.w, p.line(true))
}

func (p *Progress) update() {
	if p.bar != nil {
		p.bar.set(p.count, p.extra)
		return
	}
	if now := p.now(); now.Sub(p.last) >= p.interval {
		p.last = now
		fmt.Fprintln(p.w, p.line(false))
	}
}

// line formats "what: 120/500 (24.0%) 35.2/s ETA 11s extra", or with
// "done in" instead of the ETA when finished.
func (p *Progress) line(done bool) string {
	elapsed := p.now().Sub(p.start)
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.count) / elapsed.Seconds()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d", p.what, p.count)
	if p.total > 0 {
		fmt.Fprintf(&b, "/%d (%.1f%%)", p.total, 100*float64(p.count)/float64(p.total))
	}
	fmt.Fprintf(&b, " %.1f/s", rate)
	switch {
	case done:
		fmt.Fprintf(&b, " done in %s", elapsed.Round(time.Second/10))
	case p.total > 0 && rate > 0:
		eta := time.Duration(float64(p.total-p.count) / rate * float64(time.Second))
		fmt.Fprintf(&b, " ETA %s", eta.Round(time.Second))
	}
	if p.extra != "" {
		b.WriteString(" " + p.extra)
	}
	return b.String()
}
