//go:build !js

package data

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// fakeClock returns a Progress printing to a buffer and a function that
// advances its clock.
func fakeClock(total int) (*Progress, *bytes.Buffer, func(time.Duration)) {
	var b bytes.Buffer
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := NewPlainProgress(&b, "train", total, 10*time.Second)
	p.now = func() time.Time { return t }
	p.start, p.last = t, t
	return p, &b, func(d time.Duration) { t = t.Add(d) }
}

func TestProgressPlain(t *testing.T) {
	p, out, advance := fakeClock(500)
	advance(4 * time.Second)
	p.Add(40)
	assert.Empty(t, out.String(), "nothing before the interval")
	advance(6 * time.Second)
	p.SetExtra("loss 3.21")
	p.Add(60)
	advance(5 * time.Second)
	p.Add(50) // within the interval of the last line: silent
	advance(5 * time.Second)
	p.Add(50)
	p.Finish()
	assert.Equal(t, []string{
		"train: 100/500 (20.0%) 10.0/s ETA 40s loss 3.21",
		"train: 200/500 (40.0%) 10.0/s ETA 30s loss 3.21",
		"train: 200/500 (40.0%) 10.0/s done in 20s loss 3.21",
	}, strings.Split(strings.TrimSpace(out.String()), "\n"))
}

func TestProgressUnknownTotalConcurrent(t *testing.T) {
	p, out, advance := fakeClock(0)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				p.Add(1)
			}
		}()
	}
	wg.Wait()
	advance(2 * time.Second)
	p.Finish()
	assert.Equal(t, "train: 800 400.0/s done in 2s\n", out.String())
}
