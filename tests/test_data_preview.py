"""The preview grid: one row per distortion, each tile at its canvas size."""
import numpy as np
from PIL import Image

from stn.data import preview


def test_preview_grid_png(tmp_path):
    rng = np.random.default_rng(0)
    images = np.zeros((3, 28, 28), np.uint8)
    images[:, 8:20, 12:16] = 255
    images[:, 8:11, 8:20] = rng.integers(100, 256, (3, 3, 12), dtype=np.uint8)
    names = ["none", "rts", "tc"]
    rows = preview.distortion_rows(images, names, seed=0)
    assert [r.shape for r in rows] == [(3, 28, 28), (3, 42, 42), (3, 60, 60)]
    assert all(r.dtype == np.uint8 and r.max() > 100 for r in rows)
    np.testing.assert_array_equal(rows[0], images)
    path = tmp_path / "grid.png"
    preview.render_grid(rows, names, zoom=2).save(path)
    grid = np.asarray(Image.open(path))
    row_height = 60 * 2 + preview._GAP
    assert grid.shape == (3 * row_height, preview._LABEL_WIDTH + 3 * row_height)
    # The first tile of the "none" row is the digit itself, zoomed 2x and centred.
    pad = (120 - 56) // 2
    tile = grid[pad:pad + 56, preview._LABEL_WIDTH + pad:preview._LABEL_WIDTH + pad + 56]
    np.testing.assert_array_equal(tile[::2, ::2], images[0])
