package main

/*
#cgo linux LDFLAGS: -lGL
#define GL_GLEXT_PROTOTYPES
#include <GL/gl.h>

// show clears the window and draws the w x h RGBA frame pix (rows top
// down) with its top-left corner at framebuffer pixel (x0, y0) from the
// top, scaled by zoom. GL counts rows from the bottom, hence the flip.
static void show(int fbw, int fbh, int w, int h, float zoom, int x0, int y0, const void *pix) {
	glViewport(0, 0, fbw, fbh);
	glClearColor(0.09f, 0.09f, 0.09f, 1);
	glClear(GL_COLOR_BUFFER_BIT);
	glPixelStorei(GL_UNPACK_ALIGNMENT, 4);
	glPixelZoom(zoom, -zoom);
	glWindowPos2i(x0, fbh - y0);
	glDrawPixels(w, h, GL_RGBA, GL_UNSIGNED_BYTE, pix);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"image"
	"os"
	"runtime"
	"unsafe"

	"github.com/go-gl/glfw/v3.3/glfw"
)

// GLFW must run on the main thread: keep main's goroutine on it.
func init() { runtime.LockOSThread() }

// win shows view.frame in a GLFW window and turns input into view calls;
// it draws nothing itself.
type win struct {
	w        *glfw.Window
	v        *view
	frame    *image.RGBA // the last frame; nil when the view changed
	dragging bool
}

// window opens the window and returns when it is closed.
func window(v *view) (err error) {
	if runtime.GOOS == "linux" && os.Getenv("DISPLAY") == "" {
		return errors.New("no display to open a window on (DISPLAY is not set): use --screenshot FILE.png to write the picture instead")
	}
	// go-gl/glfw only logs a failed glfwInit (no X server, say) and then
	// panics with a *glfw.Error in the next call: turn that into an error.
	defer func() {
		if p := recover(); p != nil {
			e, ok := p.(*glfw.Error)
			if !ok {
				panic(p)
			}
			err = fmt.Errorf("cannot open a window: %w", e)
		}
	}()
	if err := glfw.Init(); err != nil {
		return fmt.Errorf("cannot open a window: %w", err)
	}
	defer glfw.Terminate()
	glfw.WindowHint(glfw.ContextVersionMajor, 2) // glDrawPixels: a legacy context
	glfw.WindowHint(glfw.ContextVersionMinor, 1)
	glfw.WindowHint(glfw.ScaleToMonitor, glfw.True)
	fw, fh := v.frameSize()
	w, err := glfw.CreateWindow(fw, fh, fmt.Sprintf("webdino view: %s on %s", v.modelName, v.imgName), nil, nil)
	if err != nil {
		return err
	}
	defer w.Destroy()
	w.MakeContextCurrent()
	glfw.SwapInterval(1)
	g := &win{w: w, v: v}
	w.SetMouseButtonCallback(g.mouseButton)
	w.SetCursorPosCallback(g.cursorPos)
	w.SetKeyCallback(g.key)
	for !w.ShouldClose() {
		g.draw()
		glfw.WaitEvents()
	}
	return nil
}

// fit returns the zoom and top-left offset that fit the frame into a
// width x height area, centred and keeping its aspect ratio.
func (g *win) fit(width, height int) (zoom float64, x0, y0 int) {
	fw, fh := g.v.frameSize()
	zoom = min(float64(width)/float64(fw), float64(height)/float64(fh))
	return zoom, int((float64(width) - zoom*float64(fw)) / 2), int((float64(height) - zoom*float64(fh)) / 2)
}

// draw shows the frame, scaled to the framebuffer (which is larger than
// the window in screen coordinates on HiDPI displays).
func (g *win) draw() {
	if g.frame == nil {
		g.frame = g.v.frame()
	}
	fbw, fbh := g.w.GetFramebufferSize()
	zoom, x0, y0 := g.fit(fbw, fbh)
	f := g.frame
	C.show(C.int(fbw), C.int(fbh), C.int(f.Rect.Dx()), C.int(f.Rect.Dy()), C.float(zoom), C.int(x0), C.int(y0), unsafe.Pointer(&f.Pix[0]))
	g.w.SwapBuffers()
}

func (g *win) mouseButton(_ *glfw.Window, b glfw.MouseButton, a glfw.Action, _ glfw.ModifierKey) {
	if b != glfw.MouseButton1 {
		return
	}
	g.dragging = a == glfw.Press
	if g.dragging {
		g.cursorPos(g.w, 0, 0)
	}
}

// cursorPos picks the patch under the cursor while the button is held.
func (g *win) cursorPos(*glfw.Window, float64, float64) {
	if !g.dragging {
		return
	}
	cx, cy := g.w.GetCursorPos() // screen coordinates, like GetSize
	zoom, x0, y0 := g.fit(g.w.GetSize())
	v := g.v
	if x, y, ok := v.patchAt(int((cx-float64(x0))/zoom), int((cy-float64(y0))/zoom)); ok && y*v.res.GW+x != v.patch {
		g.report(v.setPatch(x, y))
	}
}

func (g *win) key(_ *glfw.Window, k glfw.Key, _ int, a glfw.Action, _ glfw.ModifierKey) {
	if a == glfw.Release {
		return
	}
	v := g.v
	switch {
	case k == glfw.KeyQ || k == glfw.KeyEscape:
		g.w.SetShouldClose(true)
	case k == glfw.KeyRight:
		v.setHead(v.head + 1)
	case k == glfw.KeyLeft:
		v.setHead(v.head - 1)
	case k == glfw.KeyM:
		v.setHead(v.res.Heads)
	case k >= glfw.Key1 && k <= glfw.Key9:
		if h := int(k - glfw.Key1); h < v.res.Heads {
			v.setHead(h)
		}
	case (k == glfw.KeyUp || k == glfw.KeyDown) && a == glfw.Press:
		p := v.model.ViT.Cfg.PatchSize
		short := min(v.res.H, v.res.W) + p
		if k == glfw.KeyDown {
			short = max(p, short-2*p)
		}
		g.report(v.run(short))
		g.w.SetSize(v.frameSize())
	default:
		return
	}
	g.frame = nil
}

// report shows err (or clears the last one) in the status line.
func (g *win) report(err error) {
	g.v.message = ""
	if err != nil {
		g.v.message = "error: " + err.Error()
	}
	g.frame = nil
}
