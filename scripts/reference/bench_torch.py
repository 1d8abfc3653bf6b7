#!/usr/bin/python3
"""PyTorch baselines for `go run ./cmd/bench infer|train`.

Run with Debian's /usr/bin/python3 (python3-torch 1.13) on the CPU, or any
python3 with a CUDA torch and --device cuda on an NVIDIA GPU (cmd/bench:
WEBDINO_PYTHON and -torch-device); cmd/bench calls it and reads one JSON
object from stdout:

    bench_torch.py infer --batch 32 --size 224 ...   -> {"images_per_s", ...}
    bench_torch.py train --batch 32 --prototypes 65536 ... -> {"images_per_s", "peak_rss_bytes", ...}

The backbone is the reference ViT of dinov2_ref.py. The training step has
webdino's shapes and work (student forward and backward on 2 global and N
local crops per image through the ViT and a DINO head, iBOT on the masked
global patches, KoLeo, teacher forward on the global crops, AdamW with
per-module clipping, teacher EMA) but is not numerically identical: masks
are random patches rather than blocks, and there is no augmentation (the
crops are random tensors). It is for timing only.

On CUDA, TF32 is off (webdino computes in float32), times are taken after
torch.cuda.synchronize(), and memory is torch.cuda.max_memory_allocated()
over model building and the steps.

Memory on the CPU: peak_rss_bytes is the process's peak resident set during model
building and the steps (VmHWM, restarted by writing 5 to
/proc/self/clear_refs) minus its resident set just before: parameters,
optimiser state, activations and allocator caches. (ru_maxrss cannot be
restarted, and importing torch peaks above a small model's whole step.)
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dinov2_ref import ViT  # noqa: E402


def backbone(a, grid):
    return ViT(patch=a.patch, dim=a.dim, depth=a.depth, heads=a.heads, hidden=a.hidden, ffn=a.ffn,
               registers=a.registers, grid=grid)


def init_(model, gen):
    """Small random weights (values do not change CPU time, but keep them finite)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def proc_status(key):
    """A /proc/self/status memory field in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise KeyError(key)


def reset_peak_rss():
    """Restarts the peak resident set (VmHWM) from the current one, so that
    importing torch, whose transient peak is larger than a small model's
    whole step, does not hide the step. Returns the resident set now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return proc_status("VmRSS")


def sync(dev):
    """Waits for the device's queued work, so that host clocks time it."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def infer(a):
    dev = torch.device(a.device)
    gen = torch.Generator().manual_seed(0)
    model = backbone(a, a.grid)
    init_(model, gen)
    model.to(dev)
    x = torch.randn(a.batch, 3, a.size, a.size, generator=gen).to(dev)
    with torch.no_grad():
        model.forward_features(x)  # warm-up
        sync(dev)
        start = time.perf_counter()
        for _ in range(a.iters):
            model.forward_features(x)
        sync(dev)
        secs = time.perf_counter() - start
    return {"images_per_s": a.batch * a.iters / secs, "seconds_per_batch": secs / a.iters}


class Head(nn.Module):
    """DINO head: 3-layer MLP with GELUs, L2 normalisation, weight-normed prototypes."""

    def __init__(self, dim, hidden, bottleneck, k):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, k, bias=False))
        self.last_layer.weight_g.data.fill_(1)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.backbone = backbone(a, a.global_size // a.patch)
        self.head = Head(a.dim, a.head_hidden, a.bottleneck, a.prototypes)

    def encode(self, x, masks=None):
        t = self.backbone.tokens(x, masks)
        for b in self.backbone.blocks:
            t = b(t)
        return self.backbone.norm(t)


def xent(student_logits, teacher_probs, temp):
    return -(teacher_probs * F.log_softmax(student_logits / temp, dim=-1)).sum(-1)


def koleo(x, eps=1e-8):
    x = F.normalize(x, eps=eps, dim=-1)
    d = x @ x.t()
    d.fill_diagonal_(-2)
    nn_ix = d.argmax(dim=1)
    dist = (x - x[nn_ix]).norm(dim=-1)
    return -torch.log(dist + eps).mean()


def train(a):
    dev = torch.device(a.device)
    torch.manual_seed(0)
    rss0 = reset_peak_rss()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    student = Model(a)
    init_(student, torch.Generator().manual_seed(0))
    teacher = Model(a)  # not deepcopy: weight_norm's derived weight is no graph leaf
    teacher.load_state_dict(student.state_dict())
    student.to(dev)
    teacher.to(dev)
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.04)
    B, L, R = a.batch, a.locals, a.registers
    N = (a.global_size // a.patch) ** 2
    globals_ = torch.randn(2 * B, 3, a.global_size, a.global_size, device=dev)
    locals_ = torch.randn(L * B, 3, a.local_size, a.local_size, device=dev) if L else None
    center = torch.zeros(a.prototypes, device=dev)
    ibot_center = torch.zeros(a.prototypes, device=dev)
    gen = torch.Generator().manual_seed(1)

    def step():
        nonlocal center, ibot_center
        # iBOT masks: half the global crops, 10-50% of their patches each.
        masks = torch.zeros(2 * B, N, dtype=torch.bool)
        for i in range(2 * B):
            if torch.rand(1, generator=gen).item() < 0.5:
                r = 0.1 + 0.4 * torch.rand(1, generator=gen).item()
                masks[i, torch.randperm(N, generator=gen)[:max(1, int(r * N))]] = True
        masks = masks.to(dev)
        with torch.no_grad():
            t = teacher.encode(globals_)
            t_logits = teacher.head(t[:, 0])
            t_probs = F.softmax((t_logits - center) / 0.07, dim=-1)
            center = 0.9 * center + 0.1 * t_logits.mean(0)
            if masks.any():
                t_patch = teacher.head(t[:, 1 + R:][masks])
                t_patch_probs = F.softmax((t_patch - ibot_center) / 0.07, dim=-1)
                ibot_center = 0.9 * ibot_center + 0.1 * t_patch.mean(0)
        s = student.encode(globals_, masks)
        cls = [s[:, 0]]
        if L:
            cls.append(student.encode(locals_)[:, 0])
        s_logits = student.head(torch.cat(cls))
        swapped = torch.cat([t_probs[B:], t_probs[:B]])
        dino = xent(s_logits[:2 * B], swapped, 0.1).sum()
        for j in range(L):
            rows = s_logits[(2 + j) * B:(3 + j) * B]
            dino = dino + xent(rows, t_probs[:B], 0.1).sum() + xent(rows, t_probs[B:], 0.1).sum()
        dino = dino / (B * (2 + 2 * L))
        loss = dino + 0.1 * (koleo(s[:B, 0]) + koleo(s[B:, 0]))
        if masks.any():
            loss = loss + xent(student.head(s[:, 1 + R:][masks]), t_patch_probs, 0.1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(student.backbone.parameters(), 3.0)
        nn.utils.clip_grad_norm_(student.head.parameters(), 3.0)
        opt.step()
        with torch.no_grad():
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(0.996).add_(ps.detach(), alpha=0.004)
        return loss.item()

    step()  # warm-up
    sync(dev)
    start = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync(dev)
    secs = time.perf_counter() - start
    if not math.isfinite(loss):
        raise SystemExit(f"bench_torch: non-finite loss {loss}")
    out = {"images_per_s": B * a.steps / secs, "seconds_per_step": secs / a.steps}
    if dev.type == "cuda":
        out.update({"peak_rss_bytes": torch.cuda.max_memory_allocated(dev),
                    "memory": "torch.cuda.max_memory_allocated over model building and the steps"})
    else:
        out.update({"peak_rss_bytes": proc_status("VmHWM") - rss0,
                    "memory": "peak RSS (VmHWM, reset through /proc/self/clear_refs) minus RSS before the models are built"})
    return out


def matmul_gflops(n=1024):
    """GFLOP/s of one float32 n^3 matmul, best of three: a reference BLAS
    (Debian's fallback without libopenblas0-pthread) shows here as a few
    GFLOP/s, against hundreds for OpenBLAS."""
    x, y = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        torch.mm(x, y)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["infer", "train"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--patch", type=int, default=14)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--ffn", default="mlp")
    ap.add_argument("--registers", type=int, default=0)
    ap.add_argument("--grid", type=int, default=37, help="stored position grid (infer)")
    ap.add_argument("--size", type=int, default=224, help="image side (infer)")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=98)
    ap.add_argument("--locals", type=int, default=8)
    ap.add_argument("--prototypes", type=int, default=65536)
    ap.add_argument("--head-hidden", type=int, default=2048)
    ap.add_argument("--bottleneck", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for an NVIDIA GPU")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    if a.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("bench_torch: --device cuda, but this torch sees no CUDA GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    out = infer(a) if a.mode == "infer" else train(a)
    if a.device == "cpu":
        out["matmul_gflops"] = matmul_gflops()
    device = "cpu" if a.device == "cpu" else torch.cuda.get_device_name(torch.device(a.device))
    out.update({"torch": torch.__version__, "threads": torch.get_num_threads(), "device": device})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
