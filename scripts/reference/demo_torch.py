#!/usr/bin/python3
"""The `make demo` run (train.Demo) in PyTorch: the learning reference.

The whole-step fixture (dinov2_train_ref.py) proves that webdino's steps
compute what PyTorch computes on the same crops. This script checks a whole
run: it trains the demo's model on Fashion-MNIST with the same recipe
(multi-crop augmentation, block masks, schedules, parameter groups,
freezing, EMA, centering) written independently in PyTorch, and reports the
same k-NN evaluation as `train` (teacher CLS, k = 20, T = 0.07, the first
5000 train and 1000 test images by default, resize 32 and centre crop 28).
The same settings should give the same accuracy within the spread of
random draws (see docs/gpu.md for measured runs of both).

Its augmentation works on GPU tensors: bilinear sampling of the crop box by
default (not antialiased; --resample pil resizes as PIL and webdino do),
brightness and contrast jitter in random order (saturation, hue and
grayscale do nothing to gray images), Gaussian blur with a 9-tap kernel,
solarisation.

    python3 scripts/reference/demo_torch.py --epochs 72 --device cuda --out /tmp/ref.jsonl
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dinov2_ref as R  # noqa: E402
from bench_torch import koleo  # noqa: E402
from dinov2_train_ref import dino_loss, encode, group  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_idx(directory, split):
    with gzip.open(os.path.join(directory, f"{split}-images-idx3-ubyte.gz")) as f:
        img = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz")) as f:
        lab = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(img.copy()), torch.from_numpy(lab.astype(np.int64))


class Head(nn.Module):
    def __init__(self, dim, hidden, bottleneck, k, fixed_norm, bn=False):
        super().__init__()
        norm = (lambda: nn.BatchNorm1d(hidden)) if bn else nn.Identity
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), norm(), nn.GELU(), nn.Linear(hidden, hidden), norm(),
                                 nn.GELU(), nn.Linear(hidden, bottleneck))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, k, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad_(not fixed_norm)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def init_backbone(m, layer_scale):
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("gamma"):
                p.fill_(layer_scale)
            elif name == "pos_embed":
                nn.init.trunc_normal_(p, std=0.02)
            elif name in ("cls_token", "register_tokens"):
                nn.init.normal_(p, std=1e-6)
            elif name == "mask_token":
                p.zero_()
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                nn.init.trunc_normal_(mod.weight, std=0.02)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.LayerNorm):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)


def random_resized_crop(rng, h, w, scale, ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop.get_params."""
    area = h * w
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ar = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1), ch, cw
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def augment(rng, imgs, size, scale, blur_p, solarize_p, a):
    """Crops of imgs [B, 28, 28] in [0, 1], photometric ops, normalised: [B, 3, size, size]."""
    B, H, W = imgs.shape
    dev = imgs.device
    theta = torch.zeros(B, 2, 3)
    bright, contrast, order, sigma, solar = (np.ones(B), np.ones(B), np.zeros(B, bool), np.zeros(B),
                                             np.zeros(B, bool))
    boxes = []
    for i in range(B):
        top, left, ch, cw = random_resized_crop(rng, H, W, scale)
        flip = rng.random() < 0.5
        boxes.append((top, left, ch, cw, flip))
        # Output pixel centre u in [-1, 1] maps to the box's centre line.
        theta[i, 0, 0] = (cw / W) * (-1 if flip else 1)
        theta[i, 0, 2] = (2 * left + cw) / W - 1
        theta[i, 1, 1] = ch / H
        theta[i, 1, 2] = (2 * top + ch) / H - 1
        if rng.random() < 0.8:
            # ColorJitter draws its factors, then applies them in a random order.
            bright[i] = rng.uniform(0.6, 1.4)
            contrast[i] = rng.uniform(0.6, 1.4)
            rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)  # saturation, hue: no effect on gray
            perm = rng.permutation(4)
            order[i] = list(perm).index(0) > list(perm).index(1)  # contrast before brightness
        rng.random()  # grayscale
        if rng.random() < blur_p:
            sigma[i] = rng.uniform(*a.sigma)
        solar[i] = rng.random() < solarize_p
    if a.resample == "pil":
        # Each box resized on its own with an antialiased bicubic filter.
        x = torch.cat([F.interpolate(imgs[i, t:t + h, l:l + w][None, None].flip(3) if f else
                                     imgs[i, t:t + h, l:l + w][None, None],
                                     size=(size, size), mode="bicubic", antialias=True, align_corners=False)
                       for i, (t, l, h, w, f) in enumerate(boxes)])
    else:
        grid = F.affine_grid(theta.to(dev), (B, 1, size, size), align_corners=False)
        x = F.grid_sample(imgs.unsqueeze(1), grid, mode=a.resample, padding_mode="border", align_corners=False)
    if a.resample != "bilinear":  # as PIL: 8-bit output
        x = x.clamp(0, 1).mul(255).round().div(255)
    bt = torch.tensor(bright, dtype=torch.float32, device=dev).view(B, 1, 1, 1)
    ct = torch.tensor(contrast, dtype=torch.float32, device=dev).view(B, 1, 1, 1)
    ot = torch.tensor(order, device=dev).view(B, 1, 1, 1)

    def bfn(v):
        return (v * bt).clamp(0, 1)

    def cfn(v):
        m = v.mean(dim=(2, 3), keepdim=True)
        return ((v - m) * ct + m).clamp(0, 1)

    x = torch.where(ot, bfn(cfn(x)), cfn(bfn(x)))
    if sigma.any():
        k = torch.arange(9, dtype=torch.float32, device=dev) - 4
        s = torch.tensor(np.maximum(sigma, 1e-3), dtype=torch.float32, device=dev).view(B, 1)
        g = torch.exp(-0.5 * (k / s) ** 2)
        g = torch.where(torch.tensor(sigma > 0, device=dev).view(B, 1), g / g.sum(1, keepdim=True),
                        (k == 0).float().expand(B, 9))
        xp = F.pad(x.view(1, B, size, size), (4, 4, 4, 4), mode="reflect")
        xp = F.conv2d(xp, g.view(B, 1, 1, 9), groups=B)
        x = F.conv2d(xp, g.view(B, 1, 9, 1), groups=B).view(B, 1, size, size)
    st = torch.tensor(solar, device=dev).view(B, 1, 1, 1)
    x = torch.where(st & (x >= 128 / 255), 1 - x, x)
    x = x.expand(B, 3, size, size)
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    return (x - mean) / std


def block_mask(rng, h, w, target):
    """BEiT block masks as train/mask.go draws them."""
    mask = np.zeros((h, w), bool)
    count = 0
    while count < target:
        limit = min(target - count, h * w // 2)
        added = 0
        for _ in range(10):
            area = 4 + rng.random() * (limit - 4)
            aspect = math.exp(math.log(0.3) + rng.random() * (math.log(1 / 0.3) - math.log(0.3)))
            bh, bw = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if bh < 1 or bw < 1 or bh >= h or bw >= w:
                continue
            top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
            new = bh * bw - mask[top:top + bh, left:left + bw].sum()
            if 0 < new <= limit:
                mask[top:top + bh, left:left + bw] = True
                added = new
                break
        if added == 0:
            break
        count += added
    return mask.reshape(-1)


def batch_masks(rng, n, grid, prob=0.5, lo=0.1, hi=0.5):
    N = grid * grid
    k = int(n * prob)
    masks = [block_mask(rng, grid, grid, int(N * (lo + (hi - lo) * (i + rng.random()) / k))) if i < k
             else np.zeros(N, bool) for i in range(n)]
    rng.shuffle(masks)
    return torch.from_numpy(np.stack(masks))


def sinkhorn(logits, temp, iters=3):
    """Sinkhorn-Knopp targets of a batch [B, K]: rows sum to 1, columns to B/K."""
    q = torch.exp((logits - logits.max()) / temp).t()
    K, B = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True) * K
        q /= q.sum(dim=0, keepdim=True) * B
    return (q * B).t()


def cosine(base, final, warmup, total, start=0.0):
    """Linear warmup from start to base, then half-cosine to final (train.Schedule)."""
    def at(it):
        if it < warmup:
            return start + (base - start) * it / warmup
        if it >= total:
            return final
        p = (it - warmup) / max(total - warmup, 1)
        return final + 0.5 * (base - final) * (1 + math.cos(math.pi * p))
    return at


@torch.no_grad()
def knn(model, dev, data, a):
    (tr_x, tr_y), (te_x, te_y) = data

    def feats(x):
        out = []
        for i in range(0, len(x), 500):
            v = x[i:i + 500].to(dev).float().div(255).unsqueeze(1)
            v = F.interpolate(v, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)[:, :, 2:30, 2:30]
            v = (v.expand(-1, 3, -1, -1) - torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)) / \
                torch.tensor(STD, device=dev).view(1, 3, 1, 1)
            out.append(encode(model, v)[:, 0] if model is not None else v.flatten(1))
        return F.normalize(torch.cat(out), dim=-1)

    ftr, fte = feats(tr_x), feats(te_x)
    sim, ix = (fte @ ftr.t()).topk(20, dim=1)
    w = (sim / 0.07).exp()
    votes = torch.zeros(len(fte), 10, device=dev).scatter_add_(1, tr_y.to(dev)[ix], w)
    return (votes.argmax(1).cpu() == te_y).float().mean().item()


@torch.no_grad()
def copy_reach(model, dev, images, n=1000, seed=7):
    """How well the teacher's CLS finds planted crops (curate calibrate's crop
    edit: 75-90% of each side at a random place, bilinear back to 28 px, 8-bit)
    among n test images embedded at 28 px: the fraction of crops whose nearest
    image is their original, the median cosine of a crop to its original, and
    the median cosine of an image to its nearest other image."""
    rng = np.random.default_rng(seed)
    x = images[:n].float().div(255)
    crops = []
    for img in x:
        cw, ch = (int(round(28 * (0.75 + 0.15 * rng.random()))) for _ in range(2))
        l, t = rng.integers(0, 28 - cw + 1), rng.integers(0, 28 - ch + 1)
        c = F.interpolate(img[t:t + ch, l:l + cw][None, None], size=(28, 28), mode="bilinear", align_corners=False)
        crops.append(c[0, 0].clamp(0, 1).mul(255).round().div(255))
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)

    def feats(v):
        v = (v.to(dev).unsqueeze(1).expand(-1, 3, -1, -1) - mean) / std
        return F.normalize(encode(model, v)[:, 0], dim=-1)

    fo, fc = feats(x), feats(torch.stack(crops))
    so = fo @ fo.t()
    so.fill_diagonal_(-2)
    sc = fc @ fo.t()
    own = sc.diagonal()
    return {"crop_top1": (sc.argmax(1) == torch.arange(n, device=dev)).float().mean().item(),
            "crop_cos": own.median().item(), "nearest_other_cos": so.max(1).values.median().item()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5, help="epochs of --iters-per-epoch steps (demo: 5)")
    ap.add_argument("--iters-per-epoch", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.004, help="base LR, times sqrt(batch/1024)")
    ap.add_argument("--layerscale-init", type=float, default=1.0)
    ap.add_argument("--koleo-weight", type=float, default=0.1)
    ap.add_argument("--ibot-weight", type=float, default=1.0)
    ap.add_argument("--teacher-momentum", type=float, default=0.992)
    ap.add_argument("--prototypes", type=int, default=1024)
    ap.add_argument("--teacher-temp", type=float, default=0.07, help="final teacher temperature (warmup from 0.04 or "
                    "from this when lower)")
    ap.add_argument("--student-temp", type=float, default=0.1)
    ap.add_argument("--centering", choices=["center", "sinkhorn"], default="center")
    ap.add_argument("--head-hidden", type=int, default=256)
    ap.add_argument("--bottleneck", type=int, default=64)
    ap.add_argument("--locals", type=int, default=4)
    ap.add_argument("--head-bn", action="store_true", help="batch norm in the DINO head's MLP (DINO's use_bn)")
    ap.add_argument("--global-scale", type=float, nargs=2, default=(0.4, 1.0))
    ap.add_argument("--local-scale", type=float, nargs=2, default=(0.1, 0.4))
    ap.add_argument("--prototype-norm", choices=["learned", "fixed"], default="learned",
                    help="weight-norm gains of the prototypes: trained with weight decay (DINOv2) or fixed at 1")
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (schedules still span --epochs)")
    ap.add_argument("--resample", choices=["bilinear", "bicubic", "pil"], default="bilinear",
                    help="crop resampling: bilinear or bicubic sampling of the box (no antialiasing), or pil: "
                         "antialiased bicubic as PIL, torchvision and webdino resize; bicubic and pil round to 8 bits")
    ap.add_argument("--eval-every", type=int, default=0, help="steps between k-NN evaluations (0: one per 10%%)")
    ap.add_argument("--knn-train-n", type=int, default=5000, help="k-NN memory: the first N train images")
    ap.add_argument("--knn-test-n", type=int, default=1000, help="k-NN queries: the first N test images")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="JSON lines of metrics (default: stdout only)")
    a = ap.parse_args()
    a.sigma = (0.1 / 8, 2.0 / 8)
    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)

    tr, te = load_idx(a.data, "train"), load_idx(a.data, "t10k")
    data = ((tr[0][:a.knn_train_n], tr[1][:a.knn_train_n]), (te[0][:a.knn_test_n], te[1][:a.knn_test_n]))
    images = tr[0].to(dev).float().div(255)

    D, depth, heads, hidden, patch, G, L, locals_ = 64, 4, 4, 256, 4, 28, 12, a.locals
    grid = G // patch

    def make():
        bb = R.ViT(patch=patch, dim=D, depth=depth, heads=heads, hidden=hidden, registers=0, grid=grid)
        return {"backbone": bb, "dino_head": Head(D, a.head_hidden, a.bottleneck, a.prototypes, a.prototype_norm == "fixed", a.head_bn)}

    student, teacher = make(), make()
    init_backbone(student["backbone"], a.layerscale_init)
    for m in student:
        teacher[m].load_state_dict(student[m].state_dict())
        student[m].to(dev)
        teacher[m].to(dev)
        for p in teacher[m].parameters():
            p.requires_grad_(False)

    groups = []
    for m, mod in student.items():
        for n, p in mod.named_parameters():
            if not p.requires_grad:
                continue
            lr, wd, last = group(m, n, depth)
            groups.append({"params": [p], "lr": 0.0, "weight_decay": 0.0, "lr_mult": lr, "wd_mult": wd,
                           "last": last})
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)

    B, ipe = a.batch, a.iters_per_epoch
    total = a.epochs * ipe
    stop = min(a.steps, total) if a.steps > 0 else total
    ep = lambda e: min(e * ipe, total // 3)  # noqa: E731
    lr_at = cosine(a.lr * math.sqrt(B / 1024), 1e-6, ep(10), total)
    wd_at = cosine(0.04, 0.4, 0, total)
    mom_at = cosine(a.teacher_momentum, 1.0, 0, total)
    freeze = min(ipe, total // 10)

    def temp_at(it):
        w = ep(30)
        t0 = min(0.04, a.teacher_temp)
        return t0 + (a.teacher_temp - t0) * it / w if it < w else a.teacher_temp

    K = a.prototypes
    center, ibot_center = torch.zeros(K, device=dev), torch.zeros(K, device=dev)
    out = open(a.out, "w") if a.out else None

    def log(rec):
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    every = a.eval_every or max(total // 10, 1)
    copies = te[0][a.knn_test_n:a.knn_test_n + 1000]
    log({"step": 0, "knn_top1": knn(teacher["backbone"], dev, data, a), **copy_reach(teacher["backbone"], dev, copies),
         "raw_pixels_knn_top1": knn(None, dev, data, a)})
    start, it, epoch = time.time(), 0, 0
    while it < stop:
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(a.seed * 1000 + epoch))
        epoch += 1
        for s in range(0, len(images) - B + 1, B):
            if it >= stop:
                break
            imgs = images[perm[s:s + B].to(dev)]
            glob = torch.cat([augment(rng, imgs, G, a.global_scale, 1.0, 0.0, a),
                              augment(rng, imgs, G, a.global_scale, 0.1, 0.2, a)])
            loc = torch.cat([augment(rng, imgs, L, a.local_scale, 0.5, 0.0, a) for _ in range(locals_)]) if locals_ \
                else None
            masks = batch_masks(rng, 2 * B, grid).to(dev)
            temp = temp_at(it)
            with torch.no_grad():
                t = encode(teacher["backbone"], glob)
                t_cls = teacher["dino_head"](t[:, 0])
                t_probs = (sinkhorn(t_cls, temp) if a.centering == "sinkhorn"
                           else F.softmax((t_cls - center) / temp, dim=-1))
                entropy = -(t_probs * t_probs.clamp_min(1e-30).log()).sum(-1).mean().item()
                center = center * 0.9 + 0.1 * t_cls.mean(0)
                t_patch = teacher["dino_head"](t[:, 1:][masks])
                t_pprobs = (sinkhorn(t_patch, temp) if a.centering == "sinkhorn"
                            else F.softmax((t_patch - ibot_center) / temp, dim=-1))
                ibot_center = ibot_center * 0.9 + 0.1 * t_patch.mean(0)
            sg = encode(student["backbone"], glob, masks)
            cls = torch.cat([sg[:, 0], encode(student["backbone"], loc)[:, 0]]) if locals_ else sg[:, 0]
            logp = F.log_softmax(student["dino_head"](cls) / a.student_temp, dim=-1)
            dino = dino_loss(t_probs, logp, B, locals_)
            per_patch = -(t_pprobs * F.log_softmax(student["dino_head"](sg[:, 1:][masks]) / a.student_temp, dim=-1)).sum(-1)
            weight = (1 / masks.sum(-1).clamp(min=1)).unsqueeze(-1).expand_as(masks)[masks]
            ibot = (per_patch * weight).sum() / (2 * B)
            kol = koleo(sg[:B, 0]) + koleo(sg[B:, 0])
            loss = dino + a.ibot_weight * ibot + a.koleo_weight * kol
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for mod in student.values():
                nn.utils.clip_grad_norm_(mod.parameters(), 3.0)
            lr, wd = lr_at(it), wd_at(it)
            for g in opt.param_groups:
                g["lr"] = 0.0 if (g["last"] and it < freeze) else lr * g["lr_mult"]
                g["weight_decay"] = wd * g["wd_mult"]
            opt.step()
            m = mom_at(it)
            with torch.no_grad():
                for k in student:
                    for ps, pt in zip(student[k].parameters(), teacher[k].parameters()):
                        pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            it += 1
            if it % 20 == 0 or it == 1:
                log({"step": it, "loss": loss.item(), "dino": dino.item(), "ibot": ibot.item(), "koleo": kol.item(),
                     "teacher_entropy": entropy, "lr": lr, "teacher_temp": temp, "elapsed_s": time.time() - start})
            if it % every == 0 or it == stop:
                log({"step": it, "knn_top1": knn(teacher["backbone"], dev, data, a),
                     **copy_reach(teacher["backbone"], dev, copies)})


if __name__ == "__main__":
    main()
