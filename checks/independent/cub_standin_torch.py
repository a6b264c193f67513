"""An independent check of the CUB stand-in's earlier recipe (96x96 canvas, boxes regressed
from the pooled or flattened map; docs/reports/results.md "How the stand-in got here"), in PyTorch.
The current `standin` preset (128x128 canvas, soft-argmax boxes) is not rebuilt here.

Benchmark only: it imports nothing from `stn`, no test imports it, and torch never joins the
project's requirements. It rebuilds the stand-in's recipe from its description alone (cluttered
Fashion-MNIST canvases, a backbone pretrained on centred items, CNN vs 2xST-CNN with attention
crops, the same step budget) with a small plain CNN backbone with BatchNorm instead of the
narrow Inception, so that a result it shares with `stn` is a property of the recipe and budget,
and a result it does not share points at `stn`'s code. It also reports what the project's runs
only show as pictures: how much of the item the crops hold (the fraction of the item's box
inside the union of the crops, and the crops' mean area as a fraction of the canvas).

    python checks/independent/cub_standin_torch.py --data=DIR --model=st --seed=0

(`python` with torch installed; DIR holds the four Fashion-MNIST IDX files.)
"""
from __future__ import annotations

import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzip or raw) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    find = lambda kind: next(os.path.join(folder, n) for n in sorted(os.listdir(folder))
                             if n.startswith(f"{prefix}-{kind}"))
    return read_idx(find("images")), read_idx(find("labels")).astype(np.int64)


def resize(item: np.ndarray, side: int) -> np.ndarray:
    x = torch.from_numpy(item.astype(np.float32))[None, None]
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False,
                         antialias=side < item.shape[0])[0, 0].numpy()


def canvases(items, canvas=96, scale=(0.8, 1.6), pieces=12, seed=0):
    """Items scaled and placed at random with 8x8 clutter pieces; also each item's box
    (x0, y0, x1, y1) in pixels."""
    rng = np.random.default_rng(seed)
    n = len(items)
    out = np.zeros((n, canvas, canvas), np.float32)
    boxes = np.zeros((n, 4), np.float32)
    for i in range(n):
        for _ in range(pieces):
            src = items[rng.integers(n)]
            y, x = rng.integers(0, 20, 2)
            ty, tx = rng.integers(0, canvas - 8, 2)
            out[i, ty:ty + 8, tx:tx + 8] = np.maximum(out[i, ty:ty + 8, tx:tx + 8],
                                                      src[y:y + 8, x:x + 8])
        side = int(round(28 * rng.uniform(*scale)))
        ty, tx = rng.integers(0, canvas - side + 1, 2)
        out[i, ty:ty + side, tx:tx + side] = np.maximum(out[i, ty:ty + side, tx:tx + side],
                                                        resize(items[i], side))
        boxes[i] = (tx, ty, tx + side, ty + side)
    return out / 255.0, boxes


def centred(items, canvas=48, sides=(12, 44), jitter=4, seed=0):
    rng = np.random.default_rng(seed)
    out = np.zeros((len(items), canvas, canvas), np.float32)
    for i, item in enumerate(items):
        side = int(rng.integers(sides[0], sides[1] + 1))
        room = canvas - side
        ty, tx = np.clip(room // 2 + rng.integers(-jitter, jitter + 1, 2), 0, room)
        out[i, ty:ty + side, tx:tx + side] = resize(item, side)
    return out / 255.0


class Backbone(nn.Module):
    """Four conv-BN-ReLU stages (16, 32, 64, 72 channels), max-pooling after the first three:
    a 48x48 input gives a 6x6x72 map (72: the narrow Inception's descriptor width)."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 1
        for k, cout in enumerate((16, 32, 64, 72)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU()]
            if k < 3:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.body = nn.Sequential(*layers)
        self.features = 72

    def forward(self, x):
        return self.body((x - 0.5) / 0.5)


def down(x, size=48):
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


class CNN(nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.backbone, self.fc = backbone, nn.Linear(72, 10)

    def forward(self, x):
        return self.fc(self.backbone(down(x)).mean((2, 3)))


class TwoST(nn.Module):
    """A loc net (a backbone on the 48x48 view, its flattened map -> 6 numbers, zero weights,
    bias = the starting boxes) -> 2 attention boxes (s, tx, ty), bounded: s = cap sigmoid(a),
    t = (1 - s) tanh(b) -> two 48x48 crops of the 96x96 canvas -> a backbone each ->
    concatenated descriptors -> linear."""

    def __init__(self, make_backbone, cap, init_scale, init_offset, spatial):
        super().__init__()
        self.loc = make_backbone()
        self.parts = nn.ModuleList([make_backbone(), make_backbone()])
        self.spatial, self.cap = spatial, cap
        self.regress = nn.Linear(72 * 36 if spatial else 72, 6)
        nn.init.zeros_(self.regress.weight)
        u = init_scale / cap
        start = []
        for tx in (-init_offset, init_offset):
            start += [np.log(u / (1 - u)), np.arctanh(tx / (1 - init_scale)), 0.0]
        with torch.no_grad():
            self.regress.bias.copy_(torch.tensor(start, dtype=torch.float32))
        self.fc = nn.Linear(144, 10)

    def boxes(self, x):
        h = self.loc(down(x))
        h = h.flatten(1) if self.spatial else h.mean((2, 3))
        raw = self.regress(h).view(-1, 2, 3)
        s = self.cap * torch.sigmoid(raw[..., :1])
        return torch.cat([s, (1 - s) * torch.tanh(raw[..., 1:])], -1)

    def forward(self, x):
        b = self.boxes(x)
        out = []
        for k in range(2):
            s, tx, ty = b[:, k, 0], b[:, k, 1], b[:, k, 2]
            zero = torch.zeros_like(s)
            theta = torch.stack([torch.stack([s, zero, tx], 1), torch.stack([zero, s, ty], 1)], 1)
            grid = F.affine_grid(theta, (x.shape[0], 1, 48, 48), align_corners=False)
            crop = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False)
            out.append(self.parts[k](crop).mean((2, 3)))
        return self.fc(torch.cat(out, 1))


def pretrain(items, labels, steps, seed):
    torch.manual_seed(seed)
    held = 2000
    x = torch.from_numpy(centred(items, seed=seed))[:, None]
    y = torch.from_numpy(labels)
    net, head = Backbone(), nn.Linear(72, 10)
    params = list(net.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2 * steps // 3], 0.1)
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(steps):
        i = torch.from_numpy(rng.integers(held, len(x), 64))
        loss = F.cross_entropy(head(net(x[i]).mean((2, 3))), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        wrong = (head(net(x[:held]).mean((2, 3))).argmax(1) != y[:held]).float().mean().item()
    return net.state_dict(), wrong


def item_coverage(model, x, boxes):
    """Mean fraction of each item's box inside the union of the two crops, and the crops'
    mean area as a fraction of the canvas."""
    with torch.no_grad():
        b = model.boxes(x).numpy()
    size = x.shape[-1]
    covered, areas = [], []
    for box, item in zip(b, boxes):
        mask = np.zeros((size, size), bool)
        for s, tx, ty in box:  # normalised [-1, 1] -> pixels (align_corners=False)
            x0, x1 = ((tx - s + 1) / 2 * size, (tx + s + 1) / 2 * size)
            y0, y1 = ((ty - s + 1) / 2 * size, (ty + s + 1) / 2 * size)
            mask[max(0, int(round(y0))):int(round(y1)), max(0, int(round(x0))):int(round(x1))] = 1
            areas.append(min(s, 1.0) ** 2)
        ix0, iy0, ix1, iy1 = item.astype(int)
        covered.append(mask[iy0:iy1, ix0:ix1].mean())
    return float(np.mean(covered)), float(np.mean(areas))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True,
                        help="a folder with the four Fashion-MNIST IDX files")
    parser.add_argument("--model", choices=("cnn", "st"), default="st")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--pretrain_steps", type=int, default=1500)
    parser.add_argument("--loc_lr", type=float, default=0.1)
    parser.add_argument("--cap", type=float, default=0.5)
    parser.add_argument("--init_scale", type=float, default=0.4)
    parser.add_argument("--spatial", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.time()
    train_items, train_labels = load(args.data, "train")
    test_items, test_labels = load(args.data, "test")
    weights, pre_err = pretrain(train_items[12000:], train_labels[12000:], args.pretrain_steps,
                                args.seed)
    x, boxes = canvases(train_items[:12000], seed=args.seed)
    tx, tboxes = canvases(test_items[:2000], seed=args.seed + 1)
    x, tx = torch.from_numpy(x)[:, None], torch.from_numpy(tx)[:, None]
    y, ty = torch.from_numpy(train_labels[:12000]), torch.from_numpy(test_labels[:2000])
    order = np.random.default_rng(args.seed).permutation(12000)
    val, train = order[:1000], order[1000:]

    def make_backbone():
        net = Backbone()
        net.load_state_dict(weights)
        return net.eval()  # frozen BN statistics, as in the project
    torch.manual_seed(args.seed)
    if args.model == "cnn":
        model = CNN(make_backbone())
        groups = [{"params": model.parameters(), "lr": 0.01}]
    else:
        model = TwoST(make_backbone, args.cap, args.init_scale, 0.25, bool(args.spatial))
        loc = list(model.loc.parameters()) + list(model.regress.parameters())
        rest = [p for n, p in model.named_parameters() if not n.startswith(("loc.", "regress."))]
        groups = [{"params": rest, "lr": 0.01}, {"params": loc, "lr": 0.01 * args.loc_lr}]
    opt = torch.optim.SGD(groups, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [700], 0.1)
    rng = np.random.default_rng(args.seed + 100)
    model.train()
    for m in model.modules():  # BN statistics stay frozen while fine-tuning
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    for step in range(args.steps):
        i = torch.from_numpy(train[rng.integers(0, len(train), 32)])
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0:
            print(f"step {step + 1}: loss {loss.item():.3f}", flush=True)

    def error(images, labels):
        with torch.no_grad():
            return float(np.mean([(model(images[k:k + 250]).argmax(1) != labels[k:k + 250])
                                  .float().mean().item() for k in range(0, len(images), 250)]))
    vi = torch.from_numpy(val)
    report = {"model": args.model, "seed": args.seed, "pretrain_held_out_error": pre_err,
              "validation_error": error(x[vi], y[vi]), "test_error": error(tx, ty),
              "wall_s": round(time.time() - start, 1), "load": os.getloadavg()[0]}
    if args.model == "st":
        report["item_covered"], report["crop_area"] = item_coverage(model, tx[:500], tboxes[:500])
    print(report)


if __name__ == "__main__":
    main()
