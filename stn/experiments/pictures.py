"""Pictures of what a spatial transformer does, with Pillow.

`transformer_grid_image` lays out, for each example, the input (with the outline of the sampling
grid `T_theta(G)` drawn on it, as in the paper's Table 1 (right) column (b)) beside the
transformer's output; with several transformers, one outline and one output for each. Inputs and outputs are float images in [0, 1], NHWC, 1 or 3 channels.
"""
from __future__ import annotations

import io
import os
import textwrap

import numpy as np
from PIL import Image, ImageDraw

OUTLINE = (255, 64, 64)
# one colour per transformer when several are drawn (red, green, blue, yellow, ...)
OUTLINES = (OUTLINE, (64, 220, 64), (80, 140, 255), (255, 220, 40), (220, 80, 255))
BACKGROUND = (40, 40, 40)
FRAME = (90, 90, 90)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """`[H, W, C]` float in [0, 1] -> uint8 `[H, W, 3]`."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    elif image.shape[-1] != 3:
        image = np.repeat(image[..., :1], 3, axis=-1)
    return (image * 255.0 + 0.5).astype(np.uint8)


def grid_outline(grid: np.ndarray, height: int, width: int, scale: float,
                 align_corners: bool = False) -> list[tuple[float, float]]:
    """The border of a `[Ho, Wo, 2]` normalised grid as a closed polygon in scaled pixels.

    Normalised x in [-1, 1] maps to pixel-centre coordinates as in the sampler:
    `((x + 1) * W - 1) / 2` (align_corners False) or `(x + 1) * (W - 1) / 2` (True).
    """
    grid = np.asarray(grid, np.float64)
    border = np.concatenate([grid[0, :], grid[1:, -1], grid[-1, -2::-1], grid[-2:0:-1, 0],
                             grid[:1, 0]])
    x, y = border[:, 0], border[:, 1]
    if align_corners:
        px, py = (x + 1) * (width - 1) / 2, (y + 1) * (height - 1) / 2
    else:
        px, py = ((x + 1) * width - 1) / 2, ((y + 1) * height - 1) / 2
    return [((a + 0.5) * scale, (b + 0.5) * scale) for a, b in zip(px, py)]


def transformer_grid_image(inputs: np.ndarray, outputs, grids=None, *, columns: int = 4,
                           cell: int = 112, align_corners: bool = False) -> Image.Image:
    """A PIL image: rows of (input with grid outlines | output(s)), `columns` examples per row.

    `outputs` is one `[B, h, w, C]` array, or a list of them for several transformers (ST-CNN
    Multi); `grids` is then the matching list of `[B, h, w, 2]` grids in the input's frame, each
    outlined in its own colour (`OUTLINES`, in order), and the outputs follow in the same order.
    """
    inputs = np.asarray(inputs)
    outputs = [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple))
                                        else [outputs])]
    if grids is not None and not isinstance(grids, (list, tuple)):
        grids = [grids]
    grid_arrays = [np.asarray(g) for g in grids or []]
    n = inputs.shape[0]
    columns = max(1, min(columns, n))
    rows = (n + columns - 1) // columns
    pad = 4
    panels = 1 + len(outputs)
    block = panels * cell + (panels + 1) * pad
    canvas = Image.new("RGB", (columns * block, rows * (cell + 2 * pad)), BACKGROUND)
    for i in range(n):
        r, c = divmod(i, columns)
        x0, y0 = c * block + pad, r * (cell + 2 * pad) + pad
        panel = _outlined_panel(inputs[i], grid_arrays, i, cell, align_corners)
        canvas.paste(panel, (x0, y0))
        for k, output in enumerate(outputs):
            oh, ow = output.shape[1:3]
            oscale = cell / max(oh, ow)
            out = Image.fromarray(_to_rgb(output[i])).resize(
                (round(ow * oscale), round(oh * oscale)), Image.NEAREST)
            canvas.paste(out, (x0 + (k + 1) * (cell + pad), y0))
    return canvas


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def transformer_picture(batch: dict, grids: list, outputs: list) -> Image.Image:
    """The default picture of a task (`stn.experiments.tasks.Task.draw`): each test input with its
    transformers' grid outlines, beside the input sampled on each grid."""
    return transformer_grid_image(batch["image"], outputs, grids,
                                  columns=4 if len(grids) == 1 else 2)


def save_step_picture(image: Image.Image, directory: str, step: int,
                      prefix: str = "transformer") -> bytes:
    """Writes `directory/<prefix>_step_<step>.png` and `<prefix>_latest.png`; returns the PNG."""
    png = png_bytes(image)
    os.makedirs(directory, exist_ok=True)
    for name in (f"{prefix}_step_{step:07d}.png", f"{prefix}_latest.png"):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(png)
    return png


def step_pictures(directory: str, prefix: str = "transformer") -> list[tuple[int, str]]:
    """`[(step, path)]` of the pictures `save_step_picture` wrote in `directory`, by step."""
    if not os.path.isdir(directory):
        return []
    head, tail = f"{prefix}_step_", ".png"
    found = [(int(name[len(head):-len(tail)]), os.path.join(directory, name))
             for name in os.listdir(directory)
             if name.startswith(head) and name.endswith(tail) and name[len(head):-len(tail)].isdigit()]
    return sorted(found)


STEPS_CAPTION = ("The same examples at each step on the left (step 0: before training). Each: "
                 "the input with the sampling grid's outline, then what the transformer "
                 "sampled there.")
CAPTION_LINE_HEIGHT = 14
CAPTION_CHAR_WIDTH = 6  # Pillow's default bitmap font


def stitch_steps(directory: str, prefix: str = "transformer", most: int = 6,
                 label_width: int = 90, caption: str = "") -> Image.Image | None:
    """The step pictures of `directory` stacked top to bottom, each labelled with its step (at
    most `most` of them, evenly spaced, always the first and the last): the same examples at
    several points of training, as the paper's Figure 4, under `caption` (wrapped to the
    width; none when empty). None when there is no picture."""
    found = step_pictures(directory, prefix)
    if not found:
        return None
    if len(found) > most:
        picks = sorted({round(i * (len(found) - 1) / (most - 1)) for i in range(most)})
        found = [found[i] for i in picks]
    pictures = [Image.open(path).convert("RGB") for _, path in found]
    width = label_width + max(p.width for p in pictures)
    lines = textwrap.wrap(caption, max(width // CAPTION_CHAR_WIDTH - 2, 10)) if caption else []
    top = len(lines) * CAPTION_LINE_HEIGHT + (8 if lines else 0)
    canvas = Image.new("RGB", (width, top + sum(p.height for p in pictures)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((8, 4 + i * CAPTION_LINE_HEIGHT), line, fill=(255, 255, 255))
    for (step, _), picture in zip(found, pictures):
        canvas.paste(picture, (label_width, top))
        draw.text((8, top + picture.height // 2 - 6), f"step {step}", fill=(255, 255, 255))
        top += picture.height
    return canvas


def _outlined_panel(image: np.ndarray, grids: list, index: int, cell: int,
                    align_corners: bool) -> Image.Image:
    """One `[H, W, C]` image filling 70% of a `cell`-sized black panel (so outlines reaching
    outside it stay visible, clipped to the panel), with the outline of each grid's example
    `index` in its own colour."""
    height, width = image.shape[:2]
    scale = 0.7 * cell / max(height, width)
    picture = Image.fromarray(_to_rgb(image)).resize(
        (round(width * scale), round(height * scale)), Image.NEAREST)
    panel = Image.new("RGB", (cell, cell), (0, 0, 0))
    off = ((cell - picture.width) // 2, (cell - picture.height) // 2)
    panel.paste(picture, off)
    draw = ImageDraw.Draw(panel)
    draw.rectangle([off[0] - 1, off[1] - 1, off[0] + picture.width, off[1] + picture.height],
                   outline=FRAME)
    for k, grid in enumerate(grids):
        points = grid_outline(grid[index], height, width, scale, align_corners)
        draw.line([(a + off[0], b + off[1]) for a, b in points],
                  fill=OUTLINES[k % len(OUTLINES)], width=2)
    return panel


def channel_panels_image(inputs: np.ndarray, outputs, grids, *, cell: int = 96,
                         align_corners: bool = False) -> Image.Image:
    """A PIL image, one row per example: each channel of the input as its own grey panel with
    every transformer's grid outline (in `OUTLINES` order), then each transformer's output, its
    channels side by side, under a bar of that transformer's colour.

    For multi-channel inputs whose channels hold different objects (MNIST addition: one digit a
    channel), so a reader sees which channel each transformer picked up.
    """
    inputs = np.asarray(inputs)
    outputs = [np.asarray(o) for o in outputs]
    grids = [np.asarray(g) for g in grids]
    n, _, _, channels = inputs.shape
    pad, bar = 4, 4
    groups = [channels] + [o.shape[-1] for o in outputs]
    row_width = sum(groups) * (cell + pad) + len(groups) * 3 * pad
    canvas = Image.new("RGB", (row_width, n * (cell + 2 * pad + bar)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        y0 = i * (cell + 2 * pad + bar) + pad + bar
        x = pad
        for c in range(channels):
            canvas.paste(_outlined_panel(inputs[i, ..., c:c + 1], grids, i, cell,
                                         align_corners), (x, y0))
            x += cell + pad
        for k, output in enumerate(outputs):
            x += 2 * pad
            span = output.shape[-1] * (cell + pad) - pad
            draw.rectangle([x, y0 - bar, x + span, y0 - 1], fill=OUTLINES[k % len(OUTLINES)])
            oh, ow = output.shape[1:3]
            oscale = cell / max(oh, ow)
            for c in range(output.shape[-1]):
                canvas.paste(Image.fromarray(_to_rgb(output[i, ..., c:c + 1])).resize(
                    (round(ow * oscale), round(oh * oscale)), Image.NEAREST), (x, y0))
                x += cell + pad
    return canvas
