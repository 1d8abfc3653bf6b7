#!/usr/bin/python3
"""Whole-step fixture of DINOv2 training, in PyTorch (Debian's python3-torch).

Builds a tiny student (backbone of dinov2_ref.py + a shared DINO/iBOT head)
from random weights, copies it into the teacher, and runs six training
steps on fixed crops and masks exactly as RECIPE.md describes them, with the
recipe's schedules compressed into the six steps (train.RecipeSchedules of
six one-step epochs): LR warmup from 0 over two steps then cosine to 1e-6,
weight decay cosine 0.04 -> 0.4, teacher momentum cosine 0.992 -> 1, teacher
temperature 0.04 -> 0.07 over two steps:

  teacher: globals (unmasked) -> CLS and the student's masked patches ->
           head -> softmax((logits - center) / T_t); EMA centers (0.9)
  student: masked globals and locals -> CLS (+ masked patches) -> head
  DINO   : crop 1 <- teacher 2, crop 2 <- teacher 1, each local <- both;
           each term a batch mean of cross-entropy(student / 0.1), averaged
           over the terms
  iBOT   : per masked patch cross-entropy, times 1 / (the image's masked
           patches), summed, divided by the number of global crops
  KoLeo  : per global crop, -mean log(min_j ||x_i - x_j|| + 1e-8) over
           L2-normalised CLS tokens; weight 0.1
  then per-module gradient clipping (3.0), AdamW (0.9, 0.999, 1e-8) with
  DINOv2's parameter groups (layer decay 0.9, patch embed x0.2, no weight
  decay on biases, norms and LayerScale; prototype layer at LR 0 in the
  first step), and the teacher EMA.

Writes one safetensors file (float32) with the initial weights, the crops
and masks, each step's loss terms, the first step's clipped gradients, and
the final student, teacher and centers. The Go test
train/fixture_test.go replays it.

    /usr/bin/python3 scripts/reference/dinov2_train_ref.py [--out train/testdata/step.safetensors]
"""
import argparse
import collections
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dinov2_ref as R  # noqa: E402

# The tiny run; train/fixture_test.go builds the same config.
D, DEPTH, HEADS, HIDDEN, PATCH, REGS = 64, 2, 2, 96, 4, 1
G, L, LOCALS, B = 16, 8, 2, 4
K, HEAD_HIDDEN, BOTTLENECK = 64, 32, 16
STEPS = 6
LR, STUDENT_TEMP = 2e-3, 0.1
WARMUP = STEPS // 3  # the LR and teacher-temperature warmups, capped at a third of the run
FREEZE_LAST = 1
LAYER_DECAY, PATCH_MULT, CLIP = 0.9, 0.2, 3.0
W_DINO, W_IBOT, W_KOLEO = 1.0, 1.0, 0.1


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(D, HEAD_HIDDEN), nn.GELU(), nn.Linear(HEAD_HIDDEN, HEAD_HIDDEN),
                                 nn.GELU(), nn.Linear(HEAD_HIDDEN, BOTTLENECK))
        self.last_layer = nn.utils.weight_norm(nn.Linear(BOTTLENECK, K, bias=False))

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


def cosine(base, final, it, warmup=0):
    """Half-cosine from base (at the end of the warmup) to final (at STEPS)."""
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * (it - warmup) / (STEPS - warmup)))


def schedules(it):
    """(LR, weight decay, teacher momentum, teacher temperature) of step it."""
    lr = LR * it / WARMUP if it < WARMUP else cosine(LR, 1e-6, it, WARMUP)
    temp = 0.04 + (0.07 - 0.04) * it / WARMUP if it < WARMUP else 0.07
    return lr, cosine(0.04, 0.4, it), cosine(0.992, 1.0, it), temp


def encode(model, x, masks=None):
    t = model.tokens(x, masks)
    for b in model.blocks:
        t = b(t)
    return model.norm(t)


def group(module, name, depth=DEPTH):
    """(LR multiplier, weight-decay multiplier, is the prototype layer)."""
    layer = depth + 1
    if module == "backbone":
        if name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        elif name not in ("norm.weight", "norm.bias"):
            layer = 0
    lr = LAYER_DECAY ** (depth + 1 - layer)
    if module == "backbone" and name.startswith("patch_embed."):
        lr *= PATCH_MULT
    wd = 0.0 if name.endswith(".bias") or "norm" in name or "gamma" in name else 1.0
    return lr, wd, name.startswith("last_layer.")


def dino_loss(t_probs, logp, b, n_locals):
    """The DINO loss of b images: the mean cross-entropy over the crop pairs
    (student global crop 1 <- teacher crop 2, 2 <- 1, each local <- both);
    t_probs [2b, K] teacher probabilities, logp [(2 + n_locals) b, K] student
    log-probabilities, crop-major."""
    t1, t2 = t_probs[:b], t_probs[b:]
    terms = [-(t2 * logp[:b]).sum(-1).mean(), -(t1 * logp[b:2 * b]).sum(-1).mean()]
    for j in range(n_locals):
        lp = logp[(2 + j) * b:(3 + j) * b]
        terms += [-(t1 * lp).sum(-1).mean(), -(t2 * lp).sum(-1).mean()]
    return sum(terms) / len(terms)


def koleo(x):
    x = F.normalize(x, dim=-1, p=2, eps=1e-8)
    d = torch.cdist(x, x)
    d = d + torch.diag(torch.full((x.shape[0],), float("inf")))
    return -torch.log(d.min(dim=1).values + 1e-8).mean()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="train/testdata/step.safetensors")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(5)
    out = collections.OrderedDict()

    backbone = R.ViT(patch=PATCH, dim=D, depth=DEPTH, heads=HEADS, hidden=HIDDEN, registers=REGS, grid=G // PATCH)
    R.randomise(backbone, gen)
    head = Head()
    with torch.no_grad():
        for p in list(head.mlp.parameters()) + [head.last_layer.weight_v]:
            p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
        head.last_layer.weight_g.copy_(0.5 + torch.rand(K, 1, generator=gen))
    student = {"backbone": backbone, "dino_head": head}
    teacher = {"backbone": R.ViT(patch=PATCH, dim=D, depth=DEPTH, heads=HEADS, hidden=HIDDEN, registers=REGS,
                                 grid=G // PATCH), "dino_head": Head()}
    for m in teacher:
        teacher[m].load_state_dict(student[m].state_dict())
    for m in teacher.values():
        for p in m.parameters():
            p.requires_grad_(False)
    for m, mod in student.items():
        for n, p in mod.named_parameters():
            out[f"init.{m}.{n}"] = p.detach().clone()

    opt_groups, meta = [], []
    for m, mod in student.items():
        for n, p in mod.named_parameters():
            lr, wd, last = group(m, n)
            opt_groups.append({"params": [p], "lr": 0.0, "weight_decay": 0.0})
            meta.append((lr, wd, last))
    opt = torch.optim.AdamW(opt_groups, betas=(0.9, 0.999), eps=1e-8)
    center, ibot_center = torch.zeros(K), torch.zeros(K)
    N = (G // PATCH) ** 2

    for step in range(STEPS):
        glob = torch.randn(2 * B, 3, G, G, generator=gen)
        loc = torch.randn(LOCALS * B, 3, L, L, generator=gen)
        masks = torch.zeros(2 * B, N, dtype=torch.bool)
        for i in range(2 * B):
            if i % 2 == step % 2:  # half of the global crops, alternating per step
                masks[i] = torch.rand(N, generator=gen) < 0.15 + 0.1 * (i % 4)
                masks[i, i % N] = True
        out[f"step{step}.global"], out[f"step{step}.local"] = glob, loc
        out[f"step{step}.masks"] = masks.float()
        rows = masks.flatten().nonzero().squeeze(1)  # masked (crop, patch) in order
        lr_now, wd_now, momentum, teacher_temp = schedules(step)

        with torch.no_grad():
            tn = encode(teacher["backbone"], glob)
            t_cls = teacher["dino_head"](tn[:, 0])
            t_patch = teacher["dino_head"](tn[:, 1 + REGS:].reshape(-1, D)[rows])
            t_probs = F.softmax((t_cls - center) / teacher_temp, dim=-1)
            t_pprobs = F.softmax((t_patch - ibot_center) / teacher_temp, dim=-1)
            center = center * 0.9 + 0.1 * t_cls.mean(0)
            ibot_center = ibot_center * 0.9 + 0.1 * t_patch.mean(0)

        sg = encode(backbone, glob, masks)
        sl = encode(backbone, loc)
        s_cls = head(torch.cat([sg[:, 0], sl[:, 0]]))
        s_patch = head(sg[:, 1 + REGS:].reshape(-1, D)[rows])
        logp = F.log_softmax(s_cls / STUDENT_TEMP, dim=-1)
        dino = dino_loss(t_probs, logp, B, LOCALS)
        per_patch = -(t_pprobs * F.log_softmax(s_patch / STUDENT_TEMP, dim=-1)).sum(-1)
        weight = (1 / masks.sum(-1).clamp(min=1)).unsqueeze(-1).expand_as(masks).flatten()[rows]
        ibot = (per_patch * weight).sum() / (2 * B)
        kol = koleo(sg[:B, 0]) + koleo(sg[B:, 0])
        total = W_DINO * dino + W_IBOT * ibot + W_KOLEO * kol
        out[f"step{step}.losses"] = torch.tensor([dino.item(), ibot.item(), kol.item()])
        opt.zero_grad()
        total.backward()
        for mod in student.values():
            torch.nn.utils.clip_grad_norm_(mod.parameters(), CLIP)
        if step == 0:
            for m, mod in student.items():
                for n, p in mod.named_parameters():
                    out[f"step0.grad.{m}.{n}"] = p.grad.detach().clone()
        for g, (lr, wd, last) in zip(opt.param_groups, meta):
            g["lr"] = 0.0 if (last and step < FREEZE_LAST) else lr_now * lr
            g["weight_decay"] = wd_now * wd
        opt.step()
        with torch.no_grad():
            for m in student:
                for ps, pt in zip(student[m].parameters(), teacher[m].parameters()):
                    pt.mul_(momentum).add_((1 - momentum) * ps)

    for name, models in (("student", student), ("teacher", teacher)):
        for m, mod in models.items():
            for n, p in mod.named_parameters():
                out[f"final.{name}.{m}.{n}"] = p.detach().clone()
    out["final.center"], out["final.ibot_center"] = center, ibot_center
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    R.save_safetensors(args.out, out, {"format": "pt"})


if __name__ == "__main__":
    main()
