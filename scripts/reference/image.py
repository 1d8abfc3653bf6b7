"""Writes nn/testdata/image.json.gz: DINOv2's inference preprocessing of crops
of real photos, done by PIL the way torchvision does it on PIL images, for the
GPU pipeline to be tested against (CI reads only the committed file).

  center: torchvision Resize(short, BICUBIC) then CenterCrop(crop). Resize
          sets the short side to `short` and the long side to
          int(short * long / short_side) (truncated); CenterCrop starts at
          int(round((size - crop) / 2.0)) (Python's round: half to even).
  resize: img.resize((w, h), BICUBIC) to a given size.

torchvision is not installed here, so its two size rules are written out
below; the resampling itself is PIL's (antialiased bicubic, a = -0.5, 8-bit
fixed point with rounding after each pass). Outputs are the uint8 images
before ToTensor/Normalize (HWC). Run with Debian's python3 (python3-pil,
python3-skimage for the photos):
  /usr/bin/python3 scripts/reference/image.py
"""
import base64
import gzip
import json
import os

import PIL
from PIL import Image

DATA = "/usr/lib/python3/dist-packages/skimage/data/"
OUT = os.path.join(os.path.dirname(__file__), "../../nn/testdata/image.json.gz")

# (photo, mode, (top, left, h, w) crop of the photo, params)
CASES = [
    # upscale; (289 - 224) / 2 = 32.5 rounds to 32, not 33
    ("chelsea.png", "RGB", (60, 100, 151, 171), ("center", 256, 224)),
    # downscale; (131 - 98) / 2 = 16.5 rounds to 16
    ("astronaut.png", "RGB", (40, 150, 203, 173), ("center", 112, 98)),
    ("chelsea.png", "RGB", (60, 100, 151, 171), ("resize", 70, 84)),
    ("astronaut.png", "RGB", (40, 150, 203, 173), ("resize", 98, 84)),
    # grayscale, upscale (Fashion-MNIST-sized)
    ("camera.png", "L", (200, 220, 28, 28), ("resize", 56, 42)),
]


def center(img, short, crop):
    w, h = img.size
    if w <= h:
        nw, nh = short, int(short * h / w)
    else:
        nw, nh = int(short * w / h), short
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    top = int(round((nh - crop) / 2.0))
    left = int(round((nw - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop)), (nh, nw, top, left)


def main():
    cases = []
    for name, mode, (t, l, h, w), params in CASES:
        img = Image.open(DATA + name).convert(mode)
        img = img.crop((l, t, l + w, t + h))
        case = {"photo": name, "h": h, "w": w, "c": len(mode),
                "src": base64.b64encode(img.tobytes()).decode(), "mode": params[0]}
        if params[0] == "center":
            out, (nh, nw, top, left) = center(img, params[1], params[2])
            case.update(short=params[1], crop=params[2], resized=[nh, nw], offset=[top, left])
        else:
            out = img.resize((params[2], params[1]), Image.BICUBIC)
            case.update(out_h=params[1], out_w=params[2])
        case["out"] = base64.b64encode(out.tobytes()).decode()
        cases.append(case)
    with gzip.open(OUT, "wt") as f:
        json.dump({"pil": PIL.__version__, "cases": cases}, f)


if __name__ == "__main__":
    main()
