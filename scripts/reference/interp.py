"""Writes nn/testdata/interp.json: PyTorch's bicubic interpolation of small
position-embedding grids in the two modes DINOv2 uses, for the Go weight
tables to be tested against (CI reads only the committed JSON).

  scale:     F.interpolate(bicubic, align_corners=False, antialias=False,
             scale_factor=((h + 0.1) / Mh, (w + 0.1) / Mw))   (no registers)
  antialias: F.interpolate(bicubic, align_corners=False, antialias=True,
             size=(h, w))                                       (registers)

Run with Debian's python3 (torch 1.13, numpy):
  /usr/bin/python3 scripts/reference/interp.py > nn/testdata/interp.json
"""
import json

import torch
import torch.nn.functional as F

CASES = [  # (Mh, Mw, h, w, D)
    (5, 5, 7, 9, 2),
    (5, 5, 5, 7, 1),
    (37, 37, 16, 22, 1),
    (37, 37, 4, 4, 1),
    (6, 9, 3, 13, 1),
    (3, 4, 1, 2, 1),
]


def main():
    g = torch.Generator().manual_seed(0)
    out = {"torch": torch.__version__, "cases": []}
    for Mh, Mw, h, w, D in CASES:
        # Inputs rounded to 3 decimals keep the file small; outputs are exact.
        x = torch.round(torch.randn(Mh, Mw, D, generator=g, dtype=torch.float64) * 1000) / 1000
        case = {"Mh": Mh, "Mw": Mw, "h": h, "w": w, "D": D,
                "in": [round(v, 3) for v in x.flatten().tolist()]}
        xin = x.permute(2, 0, 1).unsqueeze(0)  # [1, D, Mh, Mw] as DINOv2 does
        for mode in ("scale", "antialias"):
            if mode == "scale":
                y = F.interpolate(xin, scale_factor=((h + 0.1) / Mh, (w + 0.1) / Mw),
                                  mode="bicubic", align_corners=False, antialias=False)
            else:
                y = F.interpolate(xin, size=(h, w), mode="bicubic",
                                  align_corners=False, antialias=True)
            assert tuple(y.shape[-2:]) == (h, w), (mode, y.shape)
            y = y[0].permute(1, 2, 0)  # [h, w, D]
            case[mode] = y.flatten().tolist()
        out["cases"].append(case)
    print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
