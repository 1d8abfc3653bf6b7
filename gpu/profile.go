package gpu

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// Profile accumulates the time of every dispatch and copy by kernel name
// while it is set on a Device (SetProfile). Where the device has timestamp
// queries (native GPUs, lavapipe) each op is timed on the GPU's clock, in a
// submission of its own, so its barriers count and launch latency does not;
// elsewhere (browsers) each op is submitted alone and waited for, and the
// wall time includes the latency.
type Profile struct {
	entries map[string]*ProfileEntry
}

// ProfileEntry is one kernel's share of a profiled run (one per Kernel.Profile
// label of it, where dispatches set one).
type ProfileEntry struct {
	Kernel string
	Calls  int
	Total  time.Duration
}

// NewProfile returns an empty profile.
func NewProfile() *Profile { return &Profile{entries: map[string]*ProfileEntry{}} }

// SetProfile makes every later Submit on d record into p, one op at a time;
// nil turns profiling off.
func (d *Device) SetProfile(p *Profile) { d.profile = p }

func (p *Profile) add(kernel string, d time.Duration) {
	e := p.entries[kernel]
	if e == nil {
		e = &ProfileEntry{Kernel: kernel}
		p.entries[kernel] = e
	}
	e.Calls++
	e.Total += d
}

// Entries returns the kernels, most total time first.
func (p *Profile) Entries() []ProfileEntry {
	var s []ProfileEntry
	for _, e := range p.entries {
		s = append(s, *e)
	}
	slices.SortFunc(s, func(a, b ProfileEntry) int {
		return cmp.Or(cmp.Compare(b.Total, a.Total), cmp.Compare(a.Kernel, b.Kernel))
	})
	return s
}

// Write prints the profile as a table: kernel, calls, total, share, mean.
func (p *Profile) Write(w io.Writer) error {
	es := p.Entries()
	var all time.Duration
	for _, e := range es {
		all += e.Total
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kernel\tcalls\ttotal ms\tshare\tmean µs\t")
	for _, e := range es {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f%%\t%.0f\t\n", e.Kernel, e.Calls, float64(e.Total)/1e6,
			100*float64(e.Total)/float64(max(all, 1)), float64(e.Total)/1e3/float64(e.Calls))
	}
	return tw.Flush()
}

// submitProfiled submits r's ops one by one, timing each into p.
func (r *Recorder) submitProfiled(p *Profile) error {
	defer r.reset()
	if r.err != nil {
		return r.err
	}
	if stamped, err := r.submitStamped(p); stamped || err != nil {
		return err
	}
	for _, o := range r.ops {
		one, name := r.single(o)
		start := time.Now()
		if err := one.submit(nil); err != nil {
			return err
		}
		r.d.Sync()
		p.add(name, time.Since(start))
	}
	return nil
}

// single returns a recorder holding only o (with its parameters) and the
// name o is profiled under.
func (r *Recorder) single(o op) (*Recorder, string) {
	one := &Recorder{d: r.d, ops: []op{o}}
	if o.k == nil {
		return one, "copy"
	}
	one.uniforms = r.uniforms[o.slot*MaxParams : (o.slot+1)*MaxParams]
	one.ops[0].slot = 0
	if o.profile != "" {
		return one, o.k.name + " " + o.profile
	}
	return one, o.k.name
}
