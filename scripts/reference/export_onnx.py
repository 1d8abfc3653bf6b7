#!/usr/bin/python3
"""One random ViT backbone as a hub-style .pth and as ONNX, for
`go run ./cmd/bench browser` (webdino and onnxruntime-web on the same weights).

Run with Debian's /usr/bin/python3 (python3-torch 1.13); cmd/bench calls it:

    export_onnx.py --pth OUT.pth --onnx OUT.onnx [--dim 384 --depth 12 ...] --size 224

The model is the reference ViT of dinov2_ref.py with random weights
(dinov2_ref.randomise, seeded). The .pth is the state dict under the
official key names, float32, which `ckpt.Import` (cmd/convert) reads. The
ONNX graph maps the input "image" [1, 3, SIZE, SIZE] to "tokens"
[1, 1 + registers + patches, dim], the final-normed tokens that webdino's
forward also reads back. The position embeddings for the SIZE x SIZE grid
are stored already interpolated (the input size is fixed, so the bicubic
resize would be a constant anyway, and ONNX Runtime's WebGPU provider need
not support cubic Resize). It prints one JSON line describing what it wrote.
"""
import argparse
import collections
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dinov2_ref import ViT, randomise  # noqa: E402


class Tokens(torch.nn.Module):
    """The backbone's final-normed tokens, with a constant position embedding."""

    def __init__(self, vit, pos):
        super().__init__()
        self.vit = vit
        vit.pos_embed_for = lambda rows, cols: pos

    def forward(self, x):
        t = self.vit.tokens(x)
        for b in self.vit.blocks:
            t = b(t)
        return self.vit.norm(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pth", required=True)
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--patch", type=int, default=14)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--ffn", default="mlp", choices=["mlp", "swiglu"])
    ap.add_argument("--registers", type=int, default=0)
    ap.add_argument("--grid", type=int, default=37)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--opset", type=int, default=17)
    a = ap.parse_args()

    gen = torch.Generator().manual_seed(a.seed)
    vit = ViT(patch=a.patch, dim=a.dim, depth=a.depth, heads=a.heads, hidden=a.hidden, ffn=a.ffn,
              registers=a.registers, grid=a.grid)
    randomise(vit, gen)
    vit.eval()
    torch.save(collections.OrderedDict((k, v.detach().clone()) for k, v in vit.state_dict().items()), a.pth)

    n = a.size // a.patch
    with torch.no_grad():
        pos = vit.pos_embed_for(n, n).detach().clone()
    model = Tokens(vit, pos).eval()
    x = torch.randn(1, 3, a.size, a.size, generator=gen)
    with torch.no_grad():
        torch.onnx.export(model, (x,), a.onnx, input_names=["image"], output_names=["tokens"],
                          opset_version=a.opset, do_constant_folding=True)
    print(json.dumps({"pth": a.pth, "onnx": a.onnx, "onnx_bytes": os.path.getsize(a.onnx),
                      "tokens": [1, 1 + a.registers + n * n, a.dim], "opset": a.opset,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
