#!/usr/bin/python3
"""A DINOv2 ViT backbone in PyTorch, written from the facts in shared/RECIPE.md
(Backbone section), and the fixture generator built on it.

Run by hand from the repository root with Debian's python3-torch (1.13) and
python3-numpy; no network and no other packages:

    /usr/bin/python3 scripts/reference/dinov2_ref.py            # the committed fixtures
    /usr/bin/python3 scripts/reference/dinov2_ref.py --dim 384 --heads 6 --out /tmp/vits  # full ViT-S width

It writes, for a model without registers and one with 4 registers (both of
reduced size, see nn/testdata/vit/README.md): the weights as a hub-style .pth
(torch.save of the state dict, official key names) and as Hugging Face
safetensors (Dinov2Model / Dinov2WithRegistersModel key names), two input
batches, and every output of the forward pass as float32 .npy files. It also
writes the small importer fixtures under ckpt/testdata/.
"""
import argparse
import collections
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias=True):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)  # q, k, v in that order
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        hd = D // self.heads
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, hd)
        att = (q @ k.transpose(-2, -1)) * hd ** -0.5
        out = att.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x):
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, ffn):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim, hidden) if ffn == "swiglu" else Mlp(dim, hidden)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim, chans=3):
        super().__init__()
        self.proj = nn.Conv2d(chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D), patches row-major


class ViT(nn.Module):
    def __init__(self, patch=14, dim=384, depth=12, heads=6, hidden=1536, ffn="mlp", registers=0, grid=37):
        super().__init__()
        self.patch, self.registers, self.grid = patch, registers, grid
        # Hub conventions for position-embedding interpolation (RECIPE.md).
        self.antialias = registers > 0
        self.offset = 0.0 if registers > 0 else 0.1
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        if registers:
            self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, hidden, ffn) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def pos_embed_for(self, rows, cols):
        """Position embeddings for a rows x cols patch grid: [1, 1 + rows*cols, D]."""
        M, D = self.grid, self.pos_embed.shape[-1]
        if rows == M and cols == M:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = patch_pos.reshape(1, M, M, D).permute(0, 3, 1, 2)
        if self.offset:
            # Output size floor(M * s) = n; source = (dst + 0.5) / s - 0.5.
            scale = ((rows + self.offset) / M, (cols + self.offset) / M)
            grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False,
                                 antialias=self.antialias)
        else:
            grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False,
                                 antialias=self.antialias)
        assert grid.shape[-2:] == (rows, cols)
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, rows * cols, D)], dim=1)

    def tokens(self, x, masks=None):
        B, _, H, W = x.shape
        t = self.patch_embed(x)
        if masks is not None:  # iBOT: masked patches become the mask token before pos-embed
            t = torch.where(masks.unsqueeze(-1), self.mask_token.unsqueeze(0).to(t.dtype), t)
        t = torch.cat([self.cls_token.expand(B, -1, -1), t], dim=1)
        t = t + self.pos_embed_for(H // self.patch, W // self.patch)
        if self.registers:  # registers carry no position
            t = torch.cat([t[:, :1], self.register_tokens.expand(B, -1, -1), t[:, 1:]], dim=1)
        return t

    def forward_features(self, x):
        t = self.tokens(x)
        for b in self.blocks:
            t = b(t)
        n = self.norm(t)
        R = self.registers
        return {"x_norm_clstoken": n[:, 0], "x_norm_regtokens": n[:, 1:R + 1],
                "x_norm_patchtokens": n[:, R + 1:], "x_prenorm": t}

    def get_intermediate_layers(self, x, n):
        """The last n blocks' outputs, normed: (patch tokens, cls token) per block."""
        t = self.tokens(x)
        outs = []
        for i, b in enumerate(self.blocks):
            t = b(t)
            if i >= len(self.blocks) - n:
                outs.append(self.norm(t))
        return [(o[:, 1 + self.registers:], o[:, 0]) for o in outs]


def randomise(model, gen):
    """Random values everywhere, scaled so activations stay O(1) and attention
    is far from uniform; LayerScale gammas are O(1), not 1e-5."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.9 + 0.1)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("weight"):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif name == "pos_embed":
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:  # cls_token, mask_token, register_tokens
                p.copy_(torch.randn(p.shape, generator=gen))


def round_to_half_and_bf16(model):
    """Makes every parameter exactly representable in both float16 and
    bfloat16, so files in either type hold the very same values."""
    with torch.no_grad():
        for p in model.parameters():
            v = p.bfloat16().float()
            v[v.abs() < 2.0 ** -14] = 0  # below f16's normal range
            assert torch.equal(v.half().float(), v)
            p.copy_(v)


def hf_name(key):
    """Hugging Face Dinov2Model name of an official key (qkv handled apart)."""
    fixed = {"cls_token": "embeddings.cls_token", "mask_token": "embeddings.mask_token",
             "pos_embed": "embeddings.position_embeddings", "register_tokens": "embeddings.register_tokens",
             "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
             "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
             "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    if key in fixed:
        return fixed[key]
    _, i, rest = key.split(".", 2)
    rest = {"attn.proj.weight": "attention.output.dense.weight", "attn.proj.bias": "attention.output.dense.bias",
            "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1",
            "mlp.w12.weight": "mlp.weights_in.weight", "mlp.w12.bias": "mlp.weights_in.bias",
            "mlp.w3.weight": "mlp.weights_out.weight", "mlp.w3.bias": "mlp.weights_out.bias"}.get(rest, rest)
    return f"encoder.layer.{i}.{rest}"


def hf_state_dict(sd):
    out = collections.OrderedDict()
    for k, v in sd.items():
        if ".attn.qkv." in k:
            _, i, _, _, kind = k.split(".")
            for part, name in zip(v.chunk(3, dim=0), ("query", "key", "value")):
                out[f"encoder.layer.{i}.attention.attention.{name}.{kind}"] = part
        else:
            out[hf_name(k)] = v
    return out


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def save_safetensors(path, tensors, metadata):
    """safetensors: u64 little-endian header length, JSON header, raw data."""
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for k, v in tensors.items():
        v = v.contiguous()
        raw = v.view(torch.int16).numpy().tobytes() if v.dtype == torch.bfloat16 else v.numpy().tobytes()
        header[k] = {"dtype": SAFETENSORS_DTYPES[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def npy(path, t):
    np.save(path, np.ascontiguousarray(t.detach().numpy().astype(np.float32)))


def vit_fixtures(args):
    os.makedirs(args.out, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    inputs = {"224x224": torch.randn(2, 3, 224, 224, generator=gen),
              "224x308": torch.randn(2, 3, 224, 308, generator=gen)}
    for size, x in inputs.items():
        npy(f"{args.out}/input_{size}.npy", x)
    hidden = 4 * args.dim
    # Every weight is exactly representable in float16 and bfloat16, so the
    # files can use three element types and still hold the very same values.
    for registers, dtype_pth, dtype_st in ((0, torch.float32, torch.float16), (4, torch.float16, torch.bfloat16)):
        name = f"vits14_d{args.depth}" + (f"_reg{registers}" if registers else "")
        model = ViT(dim=args.dim, depth=args.depth, heads=args.heads, hidden=hidden, registers=registers)
        randomise(model, gen)
        round_to_half_and_bf16(model)
        model.eval()
        sd = collections.OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
        torch.save(collections.OrderedDict((k, v.to(dtype_pth)) for k, v in sd.items()), f"{args.out}/{name}.pth")
        arch = "Dinov2WithRegistersModel" if registers else "Dinov2Model"
        save_safetensors(f"{args.out}/{name}.safetensors",
                         collections.OrderedDict((k, v.to(dtype_st)) for k, v in hf_state_dict(sd).items()),
                         {"format": "pt", "architecture": arch})
        with torch.no_grad():
            for size, x in inputs.items():
                p = f"{args.out}/{name}_{size}_"
                for k, v in model.forward_features(x).items():
                    npy(p + k + ".npy", v)
                layers = model.get_intermediate_layers(x, n=2)
                npy(p + "intermediate_patchtokens.npy", torch.stack([o[0] for o in layers]))
                npy(p + "intermediate_clstoken.npy", torch.stack([o[1] for o in layers]))
                npy(p + "pos_embed.npy", model.pos_embed_for(x.shape[2] // 14, x.shape[3] // 14))


def grad_fixtures(args, swiglu=False):
    """Gradients of every parameter for one backward pass: loss =
    sum(upstream * norm(x)) over all tokens of a masked forward (iBOT
    student) on a grid that needs position interpolation. The model is the
    registers model, or with swiglu a ViT-g-style one (SwiGLU MLP of 176,
    width 64, one head, no registers)."""
    if swiglu:
        gen = torch.Generator().manual_seed(args.seed + 4)
        model = ViT(dim=64, depth=args.depth, heads=1, hidden=176, ffn="swiglu")
        name = f"swiglu_d{args.depth}_grad"
    else:
        gen = torch.Generator().manual_seed(args.seed + 1)
        model = ViT(dim=args.dim, depth=args.depth, heads=args.heads, hidden=4 * args.dim, registers=4)
        name = f"vits14_d{args.depth}_reg4_grad"
    randomise(model, gen)
    round_to_half_and_bf16(model)
    sd = collections.OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    x = torch.randn(2, 3, 56, 70, generator=gen)
    masks = torch.rand(2, 20, generator=gen) < 0.4
    t = model.tokens(x, masks)
    for b in model.blocks:
        t = b(t)
    n = model.norm(t)
    upstream = torch.randn(n.shape, generator=gen)
    (n * upstream).sum().backward()
    save_safetensors(f"{args.out}/{name}_weights.safetensors",
                     collections.OrderedDict((k, v.half()) for k, v in sd.items()), {"format": "pt"})
    save_safetensors(f"{args.out}/{name}.safetensors",
                     collections.OrderedDict((k, p.grad.detach().clone()) for k, p in model.named_parameters()),
                     {"format": "pt"})
    npy(f"{args.out}/{name}_input.npy", x)
    npy(f"{args.out}/{name}_mask.npy", masks.float())
    npy(f"{args.out}/{name}_upstream.npy", upstream)
    npy(f"{args.out}/{name}_x_norm.npy", n)


def head_fixtures(args):
    """A DINO head (3-layer MLP, GELU, L2 normalisation, weight-normalised
    prototypes with g trainable) on random rows: logits and the gradients of
    sum(upstream * logits) for the input and every parameter."""
    gen = torch.Generator().manual_seed(args.seed + 2)
    In, hidden, bottleneck, K, R = 24, 40, 12, 50, 5
    mlp = nn.Sequential(nn.Linear(In, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                        nn.Linear(hidden, bottleneck))
    last = nn.utils.weight_norm(nn.Linear(bottleneck, K, bias=False))
    with torch.no_grad():
        for p in list(mlp.parameters()) + [last.weight_v]:
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
        last.weight_g.copy_(0.5 + torch.rand(K, 1, generator=gen))
    x = torch.randn(R, In, generator=gen, requires_grad=True)
    logits = last(F.normalize(mlp(x), dim=-1, p=2))
    upstream = torch.randn(logits.shape, generator=gen)
    (logits * upstream).sum().backward()
    params = collections.OrderedDict([(f"mlp.{k}", v) for k, v in mlp.named_parameters()] +
                                     [("last_layer.weight_g", last.weight_g), ("last_layer.weight_v", last.weight_v)])
    tensors = collections.OrderedDict()
    for k, v in params.items():
        tensors[k] = v.detach().clone()
        tensors["grad." + k] = v.grad.detach().clone()
    tensors.update(x=x.detach(), upstream=upstream, logits=logits.detach(), **{"grad.x": x.grad.detach()})
    save_safetensors(f"{args.out}/head.safetensors", tensors, {"format": "pt"})


class Evil:
    """Pickles as a call to os.system: the importer must refuse it."""
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def importer_fixtures(out):
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(7)
    # Strided views into shared storages, every storage type, a 0-d tensor.
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 8
    views = collections.OrderedDict([
        ("slice", base[1:3, ::2]),            # offset 6, strides (6, 2)
        ("transposed", base.t()),              # strides (1, 6)
        ("expanded", torch.tensor([1.5, -2.0]).expand(3, 2)),  # stride 0
        ("half", (base[2] - 1).half()),
        ("bfloat16", (base[:, 1] * -3).bfloat16()),
        ("scalar", torch.tensor(3.25)),
        ("param", nn.Parameter(torch.tensor([[1.0, 2.0]]))),
    ])
    tied = torch.tensor([0.5, 0.25])
    views["tied_a"], views["tied_b"] = tied, tied  # one storage, saved once
    expect = collections.OrderedDict((k + ".expect", v.detach().float().contiguous().clone()) for k, v in views.items())
    torch.save(collections.OrderedDict(list(views.items()) + list(expect.items())), f"{out}/views.pth")

    # A training checkpoint: teacher backbone with chunked blocks (FSDP
    # style "blocks.<chunk>.<index>"), a head, and the iteration.
    tiny = ViT(patch=14, dim=64, depth=2, heads=1, hidden=176, ffn="swiglu", registers=0, grid=2)
    randomise(tiny, gen)
    sd = tiny.state_dict()
    teacher = collections.OrderedDict()
    for k, v in sd.items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i}.{k[len('blocks.'):]}"  # chunk i holds block i: blocks.<chunk>.<i>.
        teacher["backbone." + k] = v
    teacher["dino_head.last_layer.weight"] = torch.randn(8, 4, generator=gen)
    torch.save({"teacher": teacher, "iteration": 1250}, f"{out}/wrapped_swiglu.pth")
    torch.save(sd, f"{out}/plain_swiglu.pth")

    torch.save({"x": Evil()}, f"{out}/evil.pth")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="nn/testdata/vit")
    ap.add_argument("--ckpt-out", default="ckpt/testdata")
    args = ap.parse_args()
    torch.set_num_threads(1)  # reproducible summation order
    vit_fixtures(args)
    grad_fixtures(args)
    grad_fixtures(args, swiglu=True)
    head_fixtures(args)
    importer_fixtures(args.ckpt_out)


if __name__ == "__main__":
    main()
