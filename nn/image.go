package nn

import (
	"fmt"
	"math"
	"sync"

	"github.com/webdino/webdino/gpu"
)

// The image pipeline (this file and shaders/augment.wgsl) follows what
// DINOv2 runs: torchvision transforms on PIL images. Resizing mimics PIL
// exactly, 8-bit intermediate included: PIL resizes uint8 images with
// 22-bit fixed-point weights, horizontal pass first, rounding and clamping
// to a byte after each pass; the kernels do the same integer arithmetic,
// so crops equal PIL's byte for byte (nn/testdata/image.json.gz). The
// photometric augmentations that follow work in f32 (PIL would round to
// bytes after each op): they are random anyway, and parity there buys
// nothing.

// Image is a decoded 8-bit image: H rows of W pixels of C interleaved
// channels, C = 3 (RGB) or 1 (gray, read as R = G = B).
type Image struct {
	H, W, C int
	Pix     []byte
}

// ImageBatch is a batch of images of any sizes packed into one GPU buffer
// of u32 words, 4 bytes a word (WGSL has no 8-bit storage), each image
// starting on a word.
type ImageBatch struct {
	Data   *gpu.Tensor
	images []batchImage
}

type batchImage struct{ H, W, C, off int } // off in bytes

// Len is the number of images.
func (b *ImageBatch) Len() int { return len(b.images) }

// Size returns image i's height and width.
func (b *ImageBatch) Size(i int) (h, w int) { return b.images[i].H, b.images[i].W }

// Release frees the GPU copy.
func (b *ImageBatch) Release() { b.Data.Buf.Release() }

// UploadImages checks the images and copies them to the GPU.
func UploadImages(dev *gpu.Device, imgs []Image) (*ImageBatch, error) {
	if len(imgs) == 0 {
		return nil, fmt.Errorf("upload_images: no images")
	}
	b := &ImageBatch{}
	bytes := 0
	for i, im := range imgs {
		switch {
		case im.H <= 0 || im.W <= 0:
			return nil, fmt.Errorf("upload_images: image %d is %dx%d: zero-size image", i, im.H, im.W)
		case im.C != 1 && im.C != 3:
			return nil, fmt.Errorf("upload_images: image %d has %d channels: want 3 (RGB) or 1 (gray)", i, im.C)
		case len(im.Pix) != im.H*im.W*im.C:
			return nil, fmt.Errorf("upload_images: image %d is %dx%dx%d but has %d bytes", i, im.H, im.W, im.C, len(im.Pix))
		}
		b.images = append(b.images, batchImage{im.H, im.W, im.C, bytes})
		bytes += (len(im.Pix) + 3) &^ 3
	}
	data := make([]byte, bytes)
	for i, im := range imgs {
		copy(data[b.images[i].off:], im.Pix)
	}
	t, err := dev.NewTensor("images", bytes/4)
	if err != nil {
		return nil, fmt.Errorf("upload_images: %w", err)
	}
	if err := dev.WriteBytes(t, data); err != nil {
		t.Buf.Release()
		return nil, fmt.Errorf("upload_images: %w", err)
	}
	b.Data = t
	return b, nil
}

// Crop says how one output image is made from a source image, the way
// torchvision does it on PIL images: the box (Top, Left, H, W) of the
// source is resized to RH x RW with PIL's antialiased bicubic filter, the
// window of the output size at (OY, OX) of that is kept and mirrored
// left-right when Flip. Photo is applied by Augment only.
type Crop struct {
	Image           int
	Top, Left, H, W int
	RH, RW          int
	OY, OX          int
	Flip            bool
	Photo           Photo
}

// JitterOp is one step of colour jitter.
type JitterOp uint8

const (
	JitterBrightness JitterOp = iota // clamp(f x)
	JitterContrast                   // clamp(f x + (1 - f) mean gray of the crop)
	JitterSaturation                 // clamp(f x + (1 - f) gray of the pixel)
	JitterHue                        // rotate the hue by f turns in HSV
)

// Photo is the photometric augmentation of one crop, applied in this order
// on values in [0, 1]: the Jitter ops in their order with their factors
// (gray = 0.299 R + 0.587 G + 0.114 B, PIL's luma), grayscale, a 9-tap
// Gaussian blur of standard deviation Sigma (0: none; reflect borders) and
// solarize (v >= 127.5/255, a byte >= 128, becomes 1 - v). The zero value
// changes nothing. Unlike PIL, values stay in f32 between the steps.
type Photo struct {
	Jitter                                []JitterOp
	Brightness, Contrast, Saturation, Hue float64
	Gray                                  bool
	Sigma                                 float64
	Solarize                              bool
}

// Norm is a per-channel normalisation (x - Mean) / Std of values in [0, 1].
type Norm struct{ Mean, Std [3]float64 }

// ImageNetNorm is the normalisation DINOv2 uses; Unit keeps [0, 1].
var (
	ImageNetNorm = Norm{Mean: [3]float64{0.485, 0.456, 0.406}, Std: [3]float64{0.229, 0.224, 0.225}}
	Unit         = Norm{Std: [3]float64{1, 1, 1}}
)

// params returns scale, shift words with y = x * in * scale + shift.
func (n Norm) params(in float64) []uint32 {
	w := make([]uint32, 6)
	for c := 0; c < 3; c++ {
		w[c] = gpu.F32(float32(in / n.Std[c]))
		w[3+c] = gpu.F32(float32(-n.Mean[c] / n.Std[c]))
	}
	return w
}

// CenterCropBox is torchvision's Resize(resize) then CenterCrop(crop) of an
// h x w image: the short side becomes resize and the long side
// int(resize * long / short) (truncated), and the crop starts at
// int(round((size - crop) / 2)) with Python's round (half to even).
func CenterCropBox(h, w, resize, crop int) (Crop, error) {
	if h <= 0 || w <= 0 || resize <= 0 || crop <= 0 || crop > resize {
		return Crop{}, fmt.Errorf("center_crop: image %dx%d, resize %d, crop %d: sizes must be positive and crop <= resize", h, w, resize, crop)
	}
	rh, rw := h, w
	if w <= h && w != resize {
		rh, rw = int(float64(resize*h)/float64(w)), resize
	} else if h < w && h != resize {
		rh, rw = resize, int(float64(resize*w)/float64(h))
	}
	return Crop{H: h, W: w, RH: rh, RW: rw,
		OY: int(math.RoundToEven(float64(rh-crop) / 2)), OX: int(math.RoundToEven(float64(rw-crop) / 2))}, nil
}

// PatchAlignedSize picks the any-size input for an h x w image: the short
// side becomes short (a multiple of patch) and the long side the multiple
// of patch nearest to the aspect-preserving length (at least one patch).
func PatchAlignedSize(h, w, short, patch int) (rh, rw int, err error) {
	if h <= 0 || w <= 0 || patch <= 0 || short <= 0 || short%patch != 0 {
		return 0, 0, fmt.Errorf("patch_aligned_size: image %dx%d, short side %d, patch %d: sizes must be positive and short a multiple of patch", h, w, short, patch)
	}
	long := func(l, s int) int {
		return max(1, int(math.Round(float64(short)*float64(l)/float64(s)/float64(patch)))) * patch
	}
	if h <= w {
		return short, long(w, h), nil
	}
	return long(h, w), short, nil
}

// axisTable is one axis of a PIL resize: for each output index, the first
// input index and PIL's 22-bit fixed-point weights from there on.
type axisTable struct {
	start []int
	w     [][]int32
}

var tableCache = struct {
	sync.Mutex
	m map[[2]int]*axisTable
}{m: map[[2]int]*axisTable{}}

// pilTable returns the table resizing in samples to out, built from
// InterpWeights (BicubicAntialias is PIL's filter) and quantised as PIL
// does for 8-bit images. Tables are cached: training crops reuse few sizes.
func pilTable(in, out int) *axisTable {
	key := [2]int{in, out}
	tableCache.Lock()
	defer tableCache.Unlock()
	if t, ok := tableCache.m[key]; ok {
		return t
	}
	dense := InterpWeights(in, out, BicubicAntialias)
	t := &axisTable{start: make([]int, out), w: make([][]int32, out)}
	for i := 0; i < out; i++ {
		row := dense[i*in : (i+1)*in]
		lo, hi := 0, in
		for lo < hi-1 && row[lo] == 0 {
			lo++
		}
		for hi > lo+1 && row[hi-1] == 0 {
			hi--
		}
		t.start[i] = lo
		for _, v := range row[lo:hi] {
			// PIL rounds half away from zero: int() truncates toward zero.
			t.w[i] = append(t.w[i], int32(v*(1<<22)+math.Copysign(0.5, v)))
		}
	}
	if len(tableCache.m) >= 4096 {
		clear(tableCache.m)
	}
	tableCache.m[key] = t
	return t
}

// jobWords is the size of a job record (see shaders/augment.wgsl).
const jobWords = 32

// CropPlan holds the GPU tables that turn a batch of images into N crops of
// OH x OW. Build it with NewCropPlan and refill it with Set for each batch;
// its buffers grow as needed and are reused. Set writes the tables at
// once, so it must not be called while a recording that uses the plan
// waits to be submitted.
type CropPlan struct {
	N, OH, OW int

	dev             *gpu.Device
	batch           *ImageBatch
	jobs, tabs, tmp *gpu.Tensor
	scratch         *gpu.Tensor // [N, 3, OH, OW] for Augment's blur
	chunks          []planChunk
	hasBlur         bool // some crop is blurred
}

// planChunk is a run of crops whose horizontal pass fits in tmp at once.
type planChunk struct{ first, n, maxRows int }

// NewCropPlan builds a plan for crops of batch at oh x ow.
func NewCropPlan(dev *gpu.Device, batch *ImageBatch, crops []Crop, oh, ow int) (*CropPlan, error) {
	p := &CropPlan{dev: dev}
	if err := p.Set(batch, crops, oh, ow); err != nil {
		p.Release()
		return nil, err
	}
	return p, nil
}

// NewCenterCropPlan is DINOv2's evaluation transform for every image of
// batch: Resize(resize, bicubic), CenterCrop(crop) (256 and 224).
func NewCenterCropPlan(dev *gpu.Device, batch *ImageBatch, resize, crop int) (*CropPlan, error) {
	if batch == nil {
		return nil, fmt.Errorf("crop_plan: batch is nil")
	}
	crops := make([]Crop, batch.Len())
	for i := range crops {
		h, w := batch.Size(i)
		c, err := CenterCropBox(h, w, resize, crop)
		if err != nil {
			return nil, fmt.Errorf("crop_plan: image %d: %w", i, err)
		}
		c.Image = i
		crops[i] = c
	}
	return NewCropPlan(dev, batch, crops, crop, crop)
}

// NewResizePlan resizes every image of batch to h x w (any size; for the
// backbone, multiples of the patch size that keep the aspect ratio).
func NewResizePlan(dev *gpu.Device, batch *ImageBatch, h, w int) (*CropPlan, error) {
	if batch == nil {
		return nil, fmt.Errorf("crop_plan: batch is nil")
	}
	crops := make([]Crop, batch.Len())
	for i := range crops {
		ih, iw := batch.Size(i)
		crops[i] = Crop{Image: i, H: ih, W: iw, RH: h, RW: w}
	}
	return NewCropPlan(dev, batch, crops, h, w)
}

func (c Crop) check(b *ImageBatch, oh, ow int) error {
	if c.Image < 0 || c.Image >= b.Len() {
		return fmt.Errorf("image %d of a batch of %d", c.Image, b.Len())
	}
	im := b.images[c.Image]
	if c.H <= 0 || c.W <= 0 || c.Top < 0 || c.Left < 0 || c.Top+c.H > im.H || c.Left+c.W > im.W {
		return fmt.Errorf("box %dx%d at (%d, %d) does not fit in the %dx%d image %d", c.H, c.W, c.Top, c.Left, im.H, im.W, c.Image)
	}
	if c.RH <= 0 || c.RW <= 0 || c.OY < 0 || c.OX < 0 || c.OY+oh > c.RH || c.OX+ow > c.RW {
		return fmt.Errorf("output window %dx%d at (%d, %d) is larger than the %dx%d resized box", oh, ow, c.OY, c.OX, c.RH, c.RW)
	}
	ph := c.Photo
	seen := 0
	for _, op := range ph.Jitter {
		if op > JitterHue || seen&(1<<op) != 0 {
			return fmt.Errorf("jitter ops %v: each of 0..3 at most once", ph.Jitter)
		}
		seen |= 1 << op
	}
	if ph.Brightness < 0 || ph.Contrast < 0 || ph.Saturation < 0 || math.Abs(ph.Hue) > 0.5 || ph.Sigma < 0 ||
		math.IsNaN(ph.Brightness+ph.Contrast+ph.Saturation+ph.Hue+ph.Sigma) {
		return fmt.Errorf("photo %+v: factors must be >= 0, |hue| <= 0.5, sigma >= 0", ph)
	}
	if ph.Sigma > 0 && (oh < 5 || ow < 5) {
		return fmt.Errorf("blur of a %dx%d crop: reflect borders need crops of at least 5x5", oh, ow)
	}
	return nil
}

// Set refills the plan with crops of batch at oh x ow.
func (p *CropPlan) Set(batch *ImageBatch, crops []Crop, oh, ow int) error {
	if batch == nil || batch.Data == nil {
		return fmt.Errorf("crop_plan: batch is nil")
	}
	if len(crops) == 0 || oh <= 0 || ow <= 0 {
		return fmt.Errorf("crop_plan: %d crops of %dx%d: need at least one crop of positive size", len(crops), oh, ow)
	}
	lim := p.dev.Limits()
	maxTmp := int(min(lim.MaxStorageBinding, lim.MaxBufferSize) / 4)
	// Grids are (columns / 16, rows / 4, crops).
	maxDim := int(lim.MaxWorkgroupsPerDim)
	if oh > 4*maxDim || ow > 16*maxDim { // conservative for every kernel
		return fmt.Errorf("crop_plan: output %dx%d is too large for the device's grid", oh, ow)
	}
	jobs := make([]uint32, len(crops)*jobWords)
	var tabs []uint32
	p.chunks, p.hasBlur = p.chunks[:0], false
	tmpWords, tmpMax := 0, 0
	for i, c := range crops {
		if err := c.check(batch, oh, ow); err != nil {
			return fmt.Errorf("crop_plan: crop %d: %w", i, err)
		}
		// Only the rows the kept window's vertical taps read go through the
		// horizontal pass.
		tx, ty := pilTable(c.W, c.RW), pilTable(c.H, c.RH)
		y0, y1 := c.H, 0
		for r := c.OY; r < c.OY+oh; r++ {
			y0, y1 = min(y0, ty.start[r]), max(y1, ty.start[r]+len(ty.w[r]))
		}
		rows := y1 - y0
		if rows > 4*maxDim || rows*ow > maxTmp {
			return fmt.Errorf("crop_plan: crop %d needs %dx%d intermediate pixels: too large for the device", i, rows, ow)
		}
		if len(p.chunks) == 0 || tmpWords+rows*ow > maxTmp || p.chunks[len(p.chunks)-1].n == maxDim {
			p.chunks = append(p.chunks, planChunk{first: i})
			tmpWords = 0
		}
		ch := &p.chunks[len(p.chunks)-1]
		ch.n++
		ch.maxRows = max(ch.maxRows, rows)
		im := batch.images[c.Image]
		j := jobs[i*jobWords : (i+1)*jobWords]
		j[0], j[1], j[2] = uint32(im.off), uint32(im.W), uint32(im.C)
		j[3], j[4], j[5], j[6] = uint32(c.Top+y0), uint32(c.Left), uint32(rows), uint32(tmpWords)
		j[7] = uint32(len(tabs))
		tabs, j[8] = appendWindows(tabs, tx, c.OX, ow, 0, c.W)
		j[9] = uint32(len(tabs))
		tabs, j[10] = appendWindows(tabs, ty, c.OY, oh, y0, rows)
		if c.Flip {
			j[11] = 1
		}
		tmpWords += rows * ow
		tmpMax = max(tmpMax, tmpWords)
		p.setPhoto(j, c.Photo)
	}
	p.N, p.OH, p.OW, p.batch = len(crops), oh, ow, batch
	for _, g := range []struct {
		t     **gpu.Tensor
		words int
		name  string
	}{{&p.jobs, len(jobs), "crop jobs"}, {&p.tabs, len(tabs), "crop tables"}, {&p.tmp, tmpMax, "crop tmp"}} {
		if err := p.grow(g.t, g.words, g.name); err != nil {
			return err
		}
	}
	if err := p.dev.WriteU32(p.jobs, pad(jobs, p.jobs.Len())); err != nil {
		return fmt.Errorf("crop_plan: %w", err)
	}
	if err := p.dev.WriteU32(p.tabs, pad(tabs, p.tabs.Len())); err != nil {
		return fmt.Errorf("crop_plan: %w", err)
	}
	return nil
}

func pad(w []uint32, n int) []uint32 { return append(w, make([]uint32, n-len(w))...) }

// grow makes *t hold at least words elements.
func (p *CropPlan) grow(t **gpu.Tensor, words int, name string) error {
	if *t != nil && (*t).Len() >= words {
		return nil
	}
	if *t != nil {
		(*t).Buf.Release()
	}
	n, err := p.dev.NewTensor(name, max(words, 64))
	if err != nil {
		*t = nil
		return fmt.Errorf("crop_plan: %w", err)
	}
	*t = n
	return nil
}

// appendWindows packs rows first..first+n-1 of an axis table as
// [start - base, w_0 .. w_T-1] with one tap count T for all rows (windows
// shifted left near the end so they stay inside limit samples) and
// returns the tables and T.
func appendWindows(tabs []uint32, t *axisTable, first, n, base, limit int) ([]uint32, uint32) {
	T := 0
	for r := first; r < first+n; r++ {
		T = max(T, len(t.w[r]))
	}
	for r := first; r < first+n; r++ {
		s := min(t.start[r]-base, limit-T)
		row := make([]uint32, 1+T)
		row[0] = uint32(s)
		for k, v := range t.w[r] {
			row[1+t.start[r]-base-s+k] = uint32(v)
		}
		tabs = append(tabs, row...)
	}
	return tabs, uint32(T)
}

// setPhoto writes the photometric words 12..29 of a job record.
func (p *CropPlan) setPhoto(j []uint32, ph Photo) {
	j[12] = uint32(len(ph.Jitter))
	for k, op := range ph.Jitter {
		j[13] |= uint32(op) << (4 * k)
	}
	for k, f := range []float64{ph.Brightness, ph.Contrast, ph.Saturation, ph.Hue} {
		j[14+k] = gpu.F32(float32(f))
	}
	if ph.Gray {
		j[18] = 1
	}
	if ph.Solarize {
		j[19] = 1
	}
	if ph.Sigma > 0 {
		j[20] = 1
		k := gaussian9(ph.Sigma)
		for i, v := range k {
			j[21+i] = gpu.F32(float32(v))
		}
		p.hasBlur = true
	}
}

// gaussian9 is torchvision's GaussianBlur(9) kernel: exp(-k^2 / 2 sigma^2)
// at k = -4..4, normalised.
func gaussian9(sigma float64) [9]float64 {
	var k [9]float64
	sum := 0.0
	for i := range k {
		x := float64(i-4) / sigma
		k[i] = math.Exp(-0.5 * x * x)
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	return k
}

// blurData specialises crop_blur; the index lists unroll its loops.
type blurData struct {
	Vertical        bool
	Taps, Win, Outs []int
}

func newBlurData(vertical bool) blurData {
	seq := func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = i
		}
		return s
	}
	return blurData{vertical, seq(9), seq(16), seq(8)}
}

// Release frees the plan's buffers.
func (p *CropPlan) Release() {
	for _, t := range []*gpu.Tensor{p.jobs, p.tabs, p.tmp, p.scratch} {
		if t != nil {
			t.Buf.Release()
		}
	}
	p.jobs, p.tabs, p.tmp, p.scratch = nil, nil, nil, nil
}

func checkPlan(rec *gpu.Recorder, op string, out *gpu.Tensor, batch *ImageBatch, p *CropPlan) error {
	if p == nil || p.jobs == nil || batch == nil || batch.Data == nil {
		return rec.Fail(fmt.Errorf("%s: plan or batch is nil or released", op))
	}
	if p.batch != batch {
		return rec.Fail(fmt.Errorf("%s: the plan was built for another batch", op))
	}
	if err := notNil(rec, op, []string{"out"}, out); err != nil {
		return err
	}
	if len(out.Shape) != 4 || out.Shape[0] != p.N || out.Shape[1] != 3 || out.Shape[2] != p.OH || out.Shape[3] != p.OW {
		return shapeErr(rec, op, "out %s: want [%dx3x%dx%d]", out, p.N, p.OH, p.OW)
	}
	return nil
}

// resampleCrops records the two resize passes of every chunk, writing
// out = byte * in/std - mean/std.
func resampleCrops(rec *gpu.Recorder, out *gpu.Tensor, batch *ImageBatch, p *CropPlan, norm Norm, in float64) error {
	acc := []gpu.Access{gpu.Read, gpu.Read, gpu.Read, gpu.ReadWrite}
	quad := struct{ Quad []int }{[]int{0, 1, 2, 3}}
	h := gpu.Kernel{Name: "crop_resize_h", Data: quad, Access: acc}
	v := gpu.Kernel{Name: "crop_resize_v", Data: quad, Access: acc}
	np := norm.params(in)
	for _, c := range p.chunks {
		// Workgroups are 16 x 4 invocations of 4 pixels each.
		g := [3]uint32{uint32((p.OW + 15) / 16), uint32((c.maxRows + 15) / 16), uint32(c.n)}
		if err := rec.Dispatch(h, g, []uint32{gpu.U32(c.first), gpu.U32(p.OW)}, p.jobs, p.tabs, batch.Data, p.tmp); err != nil {
			return err
		}
		g = [3]uint32{uint32((p.OW + 63) / 64), uint32((p.OH + 3) / 4), uint32(c.n)}
		params := append([]uint32{gpu.U32(c.first), gpu.U32(p.OH), gpu.U32(p.OW)}, np...)
		if err := rec.Dispatch(v, g, params, p.jobs, p.tabs, p.tmp, out); err != nil {
			return err
		}
	}
	return nil
}

// Resample records out [N, 3, OH, OW] = the plan's crops of batch (PIL's
// bicubic resize, bit-exact in its 8-bit arithmetic), scaled to [0, 1] and
// normalised by norm. Photo settings are ignored.
func Resample(rec *gpu.Recorder, out *gpu.Tensor, batch *ImageBatch, p *CropPlan, norm Norm) error {
	if err := checkPlan(rec, "resample", out, batch, p); err != nil {
		return err
	}
	return resampleCrops(rec, out, batch, p, norm, 1.0/255)
}

// Augment records out [N, 3, OH, OW] = the plan's crops of batch with their
// Photo applied (jitter, grayscale, blur, solarize; see Photo), then
// normalised by norm.
func Augment(rec *gpu.Recorder, out *gpu.Tensor, batch *ImageBatch, p *CropPlan, norm Norm) error {
	if err := checkPlan(rec, "augment", out, batch, p); err != nil {
		return err
	}
	if maxDim := int(rec.Device().Limits().MaxWorkgroupsPerDim); 3*p.N > maxDim {
		return shapeErr(rec, "augment", "%d crops: at most %d per call", p.N, maxDim/3)
	}
	if err := resampleCrops(rec, out, batch, p, Unit, 1.0/255); err != nil {
		return err
	}
	finish := append(norm.params(1), gpu.F32(float32(127.5/255)))
	k := gpu.Kernel{Name: "crop_color", Access: []gpu.Access{gpu.Read, gpu.ReadWrite}}
	if err := rec.Dispatch(k, [3]uint32{uint32(p.N), 1, 1}, append([]uint32{gpu.U32(p.OH * p.OW)}, finish...), p.jobs, out); err != nil {
		return err
	}
	if !p.hasBlur {
		return nil
	}
	if err := p.grow(&p.scratch, out.Len(), "crop scratch"); err != nil {
		return rec.Fail(err)
	}
	tmp, err := p.scratch.View(0, out.Shape...)
	if err != nil {
		return rec.Fail(err)
	}
	acc := []gpu.Access{gpu.Read, gpu.Read, gpu.ReadWrite}
	// Each invocation blurs 8 outputs along the pass; workgroups are 16 x 4.
	params := append([]uint32{gpu.U32(p.OH), gpu.U32(p.OW)}, finish...)
	gh := [3]uint32{uint32((p.OW + 127) / 128), uint32((p.OH + 3) / 4), uint32(3 * p.N)}
	if err := rec.Dispatch(gpu.Kernel{Name: "crop_blur", Data: newBlurData(false), Access: acc},
		gh, params, p.jobs, out, tmp); err != nil {
		return err
	}
	gv := [3]uint32{uint32((p.OW + 15) / 16), uint32((p.OH + 31) / 32), uint32(3 * p.N)}
	return rec.Dispatch(gpu.Kernel{Name: "crop_blur", Data: newBlurData(true), Access: acc},
		gv, params, p.jobs, tmp, out)
}
