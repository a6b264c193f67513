"""An independent PyTorch reading of co-localisation (paper appendix A.2), written from the text
alone, to tell the `stn` package's code from the appendix's objective. Not part of the package:
torch never joins requirements.txt and no test imports this file.

    python checks/independent/coloc_torch.py --digit=3                # train, print % localised
    python checks/independent/coloc_torch.py --digits=DIR --digit=3 --landscape

(`python` with torch installed; `--digits` is a folder of the four MNIST IDX files, by default
the 10,000 digits embedded in the repository, `stn/experiments/data/sample/`, read as files; the
embedding is kept in `--cache`, by default `runs/coloc_torch_embedding.pt` in the repository.)

What it does, each piece its own: reads the four MNIST IDX files of `--digits`; trains a
digit-classification CNN (conv 64 9x9, 2x2 max pool, conv 64 7x7, 2x2 max pool, linear 10;
undistorted 28x28 digits, SGD with momentum) once and keeps it in `--cache`; makes 100 images of
one class, each digit at a uniformly random place on a black 84x84 canvas (`--clutter` 6x6
patches of other training digits for TC); trains the appendix's localisation net (conv 8 9x9
stride 4, 2x2 max pool, fc 8, fc 8, fc 3) with an attention transformer (`affine_grid` /
`grid_sample`, 28x28 output) by the hinge loss over every pair n != m of a batch,
max(0, |e(I_n^T) - e(I_m^T)|^2 - |e(I_n^T) - e(I_n^rand)|^2 + alpha), e() the three layers'
activations concatenated; prints the fraction of the 100 images whose box has IoU > 0.5 with
the digit's 28x28 cell, and the mean IoU, every `--log_every` steps.

The choices A.2 leaves open are flags (defaults: the `stn` package's defaults, so that a
collapse here and there can be compared): `--patch` (how I_n^rand is drawn), `--descriptor`,
`--init_scale`, `--min_scale`, `--max_scale`, `--optimizer`, `--lr`, `--margin`, `--batch`,
`--embedding_shift`, `--scale_lr_factor`. With `--landscape` it trains nothing and prints the
loss along boxes moved sideways off the digits and along the straight line from the starting
box to the true ones (`landscape`). docs/reports/appendix.md has the numbers.
"""
from __future__ import annotations

import argparse
import gzip
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CANVAS, DIGIT, PATCH = 84, 28, 6
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_digits(folder: str):
    def path(stem):
        for name in (stem, stem + ".gz"):
            if os.path.exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
        raise SystemExit(f"{stem} not found in {folder}")
    return (read_idx(path("train-images-idx3-ubyte")), read_idx(path("train-labels-idx1-ubyte")),
            read_idx(path("t10k-images-idx3-ubyte")), read_idx(path("t10k-labels-idx1-ubyte")))


class DigitCNN(nn.Module):
    """conv 64 9x9 -> ReLU -> pool -> conv 64 7x7 -> ReLU -> pool -> linear 10."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 64, 9), nn.Conv2d(64, 64, 7)
        self.fc = nn.Linear(2 * 2 * 64, 10)

    def layers(self, x, relu: bool = True):
        a1 = self.c1(x)
        h1 = F.max_pool2d(F.relu(a1), 2)
        a2 = self.c2(h1)
        h2 = F.max_pool2d(F.relu(a2), 2)
        logits = self.fc(h2.flatten(1))
        if relu:
            return [h1, h2, logits]
        return [a1, a2, logits]  # before the ReLUs (and before pooling)

    def forward(self, x):
        return self.layers(x)[-1]


def shifted(x, shift: int, gen):
    """Each 28x28 digit moved by up to `shift` pixels on each axis (zeros come in)."""
    if shift <= 0:
        return x
    padded = F.pad(x, (shift, shift, shift, shift))
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * shift + 1, (len(x), 2), generator=gen)
    for i, (dx, dy) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + DIGIT, dx:dx + DIGIT]
    return out


def train_embedding(train_x, train_y, test_x, test_y, steps: int, cache: str,
                    shift: int = 0) -> DigitCNN:
    """The digit CNN, trained once (SGD 0.02, momentum 0.9, batch 64; each digit moved by up
    to `shift` pixels) and kept in `cache`."""
    net = DigitCNN()
    if os.path.exists(cache):
        net.load_state_dict(torch.load(cache))
        return net
    torch.manual_seed(0)
    net = DigitCNN()
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    x = torch.tensor(train_x, dtype=torch.float32)[:, None] / 255
    y = torch.tensor(train_y, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        loss = F.cross_entropy(net(shifted(x[idx], shift, g)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(torch.tensor(test_x, dtype=torch.float32)[:, None] / 255).argmax(1).numpy()
    print(f"embedding: {steps} steps, test error {100 * np.mean(pred != test_y):.2f}%", flush=True)
    os.makedirs(os.path.dirname(cache) or ".", exist_ok=True)
    torch.save(net.state_dict(), cache)
    return net


def make_images(digits: np.ndarray, pool: np.ndarray, clutter: int, rng) -> tuple:
    """Canvases [N, 1, 84, 84] and the digits' boxes [N, 4] (x0, y0, x1, y1 in pixels)."""
    n = len(digits)
    images = np.zeros((n, 1, CANVAS, CANVAS), np.float32)
    boxes = np.zeros((n, 4), np.float32)
    for i, d in enumerate(digits):
        x, y = rng.integers(0, CANVAS - DIGIT + 1, 2)
        images[i, 0, y:y + DIGIT, x:x + DIGIT] = d / 255
        boxes[i] = (x, y, x + DIGIT, y + DIGIT)
        for _ in range(clutter):
            src = pool[rng.integers(len(pool))]
            wx, wy = rng.integers(0, DIGIT - PATCH + 1, 2)
            px, py = rng.integers(0, CANVAS - PATCH + 1, 2)
            piece = src[wy:wy + PATCH, wx:wx + PATCH] / 255
            region = images[i, 0, py:py + PATCH, px:px + PATCH]
            images[i, 0, py:py + PATCH, px:px + PATCH] = np.maximum(region, piece)
    return torch.tensor(images), torch.tensor(boxes)


class LocNet(nn.Module):
    """conv 8 9x9 stride 4 -> ReLU -> 2x2 max pool -> fc 8 -> ReLU -> fc 8 -> ReLU -> fc 3;
    the last layer starts at zero weights and a bias giving the box (init_scale, 0, 0)."""

    def __init__(self, init_scale: float, min_scale: float, max_scale: float = 1.0,
                 hidden: int = 8):
        super().__init__()
        self.min_scale, self.max_scale = min_scale, max_scale
        self.conv = nn.Conv2d(1, 8, 9, stride=4)
        self.fc1, self.fc2 = nn.Linear(9 * 9 * 8, hidden), nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 3)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            if min_scale > 0:  # s = m + (M - m) sigmoid(z), t = (1 - s) tanh(z_t)
                f = (init_scale - min_scale) / (max_scale - min_scale)
                self.out.bias.copy_(torch.tensor([np.log(f / (1 - f)), 0.0, 0.0]))
            else:
                self.out.bias.copy_(torch.tensor([init_scale, 0.0, 0.0]))

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.conv(x)), 2).flatten(1)
        z = self.out(F.relu(self.fc2(F.relu(self.fc1(h)))))
        if self.min_scale <= 0:
            return z
        s = self.min_scale + (self.max_scale - self.min_scale) * torch.sigmoid(z[:, :1])
        return torch.cat([s, (1 - s) * torch.tanh(z[:, 1:])], 1)


def crop(images, theta, size: int = DIGIT):
    """Attention crops: theta (s, tx, ty) -> [[s, 0, tx], [0, s, ty]], size x size, bilinear."""
    s, tx, ty = theta[:, 0], theta[:, 1], theta[:, 2]
    zero = torch.zeros_like(s)
    mat = torch.stack([torch.stack([s, zero, tx], 1), torch.stack([zero, s, ty], 1)], 1)
    grid = F.affine_grid(mat, (len(images), 1, size, size), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def describe(net: DigitCNN, crops, descriptor: str):
    """e(): the three layers' activations concatenated ('unit': each layer to unit length;
    'raw': as they come; 'pre': before the ReLUs, each to unit length)."""
    outs = [o.flatten(1) for o in net.layers(crops, relu=descriptor != "pre")]
    if descriptor in ("unit", "pre"):
        outs = [o / (o.norm(dim=1, keepdim=True) + 1e-6) for o in outs]
    return torch.cat(outs, 1)


def random_patches(theta, rule: str, gen):
    """I_n^rand's attention parameters: 'same' the crop's scale (no gradient), 'fixed:S' half
    side S, at a uniformly random place inside the image; 'away': the crop's scale, in the half
    of the image across the centre from the crop."""
    n = len(theta)
    if rule.startswith("fixed:"):
        s = torch.full((n,), float(rule[6:]))
    else:
        s = theta[:, 0].detach().abs().clamp(max=1.0)
    pos = torch.rand(n, 2, generator=gen) * 2 - 1
    if rule == "away":  # the side of the image opposite the crop's centre, on each axis
        pos = -torch.sign(theta[:, 1:].detach() + 1e-9) * pos.abs()
    return torch.cat([s[:, None], pos * (1 - s[:, None])], 1)


def pair_loss(a, rand, margin: float):
    """Mean over n and m != n of max(0, |a_n - a_m|^2 - |a_n - rand_n|^2 + margin)."""
    close = torch.cdist(a, a).pow(2)
    far = (a - rand).pow(2).sum(1, keepdim=True)
    hinge = F.relu(close - far + margin)
    mask = 1 - torch.eye(len(a))
    return (hinge * mask).sum() / mask.sum()


def iou(theta, boxes):
    """IoU of the attention boxes (pixels) with the true boxes."""
    half = theta[:, 0].abs() * CANVAS / 2
    cx, cy = (theta[:, 1] + 1) * CANVAS / 2, (theta[:, 2] + 1) * CANVAS / 2
    x0, y0, x1, y1 = cx - half, cy - half, cx + half, cy + half
    ix = (torch.minimum(x1, boxes[:, 2]) - torch.maximum(x0, boxes[:, 0])).clamp(min=0)
    iy = (torch.minimum(y1, boxes[:, 3]) - torch.maximum(y0, boxes[:, 1])).clamp(min=0)
    inter = ix * iy
    union = (x1 - x0) * (y1 - y0) + DIGIT * DIGIT - inter
    return inter / union


def rows_loss(net, images, theta, patch: str, gen, descriptor: str = "unit", margin=1.0,
              fixed=None, repeats: int = 4):
    """Each image's row of the pair loss (mean over partners m) at boxes `theta`, averaged over
    `repeats` draws of I^rand; with `fixed` boxes, the partners m are cropped there instead."""
    with torch.no_grad():
        a = describe(net, crop(images, theta), descriptor)
        partners = a if fixed is None else describe(net, crop(images, fixed), descriptor)
        total = torch.zeros(len(images))
        for _ in range(repeats):
            r = describe(net, crop(images, random_patches(theta, patch, gen)), descriptor)
            close = torch.cdist(a, partners).pow(2)
            far = (a - r).pow(2).sum(1, keepdim=True)
            total += (F.relu(close - far + margin) * (1 - torch.eye(len(a)))).sum(1) / (len(a) - 1)
        return total / repeats


def landscape(net, images, boxes, args, gen) -> None:
    """Prints the loss (a) with boxes of the digit's size moved k pixels sideways off the
    digits, every box at once and one at a time (the others true), and (b) along the straight
    line from the starting box (init_scale, centred) to the true boxes."""
    centre = ((boxes[:, :2] + boxes[:, 2:]) / 2) / (CANVAS / 2) - 1
    n, side = len(images), DIGIT / CANVAS
    true = torch.cat([torch.full((n, 1), side), centre], 1)
    print("pixels  IoU   every box moved | one box moved, the others true")
    for k in (0, 2, 4, 7, 10, 14, 20, 28, 40):
        moved = true.clone()  # towards the image's vertical centre line, kept inside
        step = 2 * k / CANVAS
        moved[:, 1] = (centre[:, 0] - torch.where(centre[:, 0] > 0, step, -step)).clamp(
            -(1 - side), 1 - side)
        every = rows_loss(net, images, moved, args.patch, gen, args.descriptor, args.margin)
        alone = rows_loss(net, images, moved, args.patch, gen, args.descriptor, args.margin,
                          fixed=true, repeats=2)
        print(f"{k:6d}  {iou(moved, boxes).mean():.2f}  {every.mean():.3f}"
              f"{'':11s}| {alone.mean():.3f}")
    start = torch.tensor([[args.init_scale, 0.0, 0.0]]).repeat(n, 1)
    print("fraction of the way from the start to the true boxes: IoU, loss")
    for lam in np.linspace(0, 1, 6):
        theta = (1 - lam) * start + lam * true
        loss = rows_loss(net, images, theta, args.patch, gen, args.descriptor, args.margin)
        print(f"  {lam:.1f}  {iou(theta, boxes).mean():.2f}  {loss.mean():.3f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", default=os.path.join(ROOT, "stn", "experiments", "data", "sample"))
    p.add_argument("--cache", default=os.path.join(ROOT, "runs", "coloc_torch_embedding.pt"))
    p.add_argument("--embedding_steps", type=int, default=3000)
    p.add_argument("--embedding_shift", type=int, default=0,
                   help="train the embedding on digits moved by up to this many pixels")
    p.add_argument("--digit", type=int, default=3)
    p.add_argument("--clutter", type=int, default=0)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--margin", type=float, default=1.0)
    p.add_argument("--init_scale", type=float, default=0.9)
    p.add_argument("--min_scale", type=float, default=0.2)
    p.add_argument("--max_scale", type=float, default=1.0)
    p.add_argument("--patch", default="same")
    p.add_argument("--descriptor", choices=("unit", "raw", "pre"), default="unit")
    p.add_argument("--scale_lr_factor", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log_every", type=int, default=100)
    p.add_argument("--landscape", action="store_true",
                   help="print the loss along boxes moved off the digits instead of training")
    args = p.parse_args()
    torch.set_num_threads(1)
    train_x, train_y, test_x, test_y = load_digits(args.digits)
    held = 1000  # the last 1,000 training digits: never optimised on nor embedded
    net = train_embedding(train_x[:-held], train_y[:-held], test_x, test_y,
                          args.embedding_steps, args.cache, args.embedding_shift)
    net.eval()
    for q in net.parameters():
        q.requires_grad_(False)
    rng = np.random.default_rng(args.seed)
    ours = train_x[:-held][train_y[:-held] == args.digit][:100]
    images, boxes = make_images(ours, train_x[:-held], args.clutter, rng)
    if args.landscape:
        landscape(net, images, boxes, args, torch.Generator().manual_seed(args.seed))
        return
    torch.manual_seed(args.seed)
    loc = LocNet(args.init_scale, args.min_scale, args.max_scale)
    params = list(loc.parameters())
    opt = (torch.optim.SGD(params, lr=args.lr, momentum=0.9) if args.optimizer == "sgd"
           else torch.optim.Adam(params, lr=args.lr))
    gen = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for step in range(args.steps + 1):
        if step % args.log_every == 0:
            with torch.no_grad():
                theta = loc(images)
                o = iou(theta, boxes)
            print(f"step {step:5d}  localised {100 * (o > 0.5).float().mean():5.1f}%  "
                  f"IoU {o.mean():.3f}  mean half-side {theta[:, 0].abs().mean():.3f}  "
                  f"({time.time() - start:.0f} s)", flush=True)
        if step == args.steps:
            break
        idx = torch.randperm(len(images), generator=gen)[:args.batch]
        x = images[idx]
        theta = loc(x)
        a = describe(net, crop(x, theta), args.descriptor)
        r = describe(net, crop(x, random_patches(theta, args.patch, gen)), args.descriptor)
        loss = pair_loss(a, r, args.margin)
        opt.zero_grad()
        loss.backward()
        if args.scale_lr_factor != 1.0:  # the scale's output row learns slower (or faster)
            loc.out.weight.grad[0] *= args.scale_lr_factor
            loc.out.bias.grad[0] *= args.scale_lr_factor
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        if step % args.log_every == 0:
            print(f"            loss {loss.item():.3f}", flush=True)


if __name__ == "__main__":
    main()
