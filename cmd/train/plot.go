package main

import (
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// plots writes losses.png (every term and the teacher's entropy against the
// step) and knn.png.
func (s *session) plots() error {
	if len(s.steps) > 0 {
		p := plot.New()
		p.Title.Text = "DINOv2 losses"
		p.X.Label.Text = "step"
		p.Y.Label.Text = "loss"
		series := []struct {
			name string
			get  func(stepRecord) float64
			c    color.RGBA
		}{
			{"total", func(r stepRecord) float64 { return r.Total }, color.RGBA{0, 0, 0, 255}},
			{"dino", func(r stepRecord) float64 { return r.DINO }, color.RGBA{31, 119, 180, 255}},
			{"ibot", func(r stepRecord) float64 { return r.IBOT }, color.RGBA{255, 127, 14, 255}},
			{"koleo", func(r stepRecord) float64 { return r.KoLeo }, color.RGBA{44, 160, 44, 255}},
			{"teacher entropy", func(r stepRecord) float64 { return r.TeacherEnt }, color.RGBA{148, 103, 189, 255}},
		}
		for _, sr := range series {
			pts := make(plotter.XYs, len(s.steps))
			for i, r := range s.steps {
				pts[i].X, pts[i].Y = float64(r.Step), sr.get(r)
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				return err
			}
			l.Color = sr.c
			p.Add(l)
			p.Legend.Add(sr.name, l)
		}
		p.Legend.Top = true
		p.Add(plotter.NewGrid())
		if err := p.Save(8*vg.Inch, 5*vg.Inch, outPath(s.o, "losses.png")); err != nil {
			return err
		}
	}
	if len(s.evals) > 0 {
		p := plot.New()
		p.Title.Text = "k-NN top-1 accuracy of the teacher"
		p.X.Label.Text = "step"
		p.Y.Label.Text = "accuracy (%)"
		pts := make(plotter.XYs, len(s.evals))
		for i, r := range s.evals {
			pts[i].X, pts[i].Y = float64(r.Step), 100*r.KNNTop1
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		p.Add(l, sc, plotter.NewGrid())
		if err := p.Save(8*vg.Inch, 5*vg.Inch, outPath(s.o, "knn.png")); err != nil {
			return err
		}
	}
	return nil
}
