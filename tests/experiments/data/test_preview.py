"""The preview grid: one row per distortion, each tile at its canvas size; bad flags refused."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stn.experiments.data import preview

import helpers

REPO = Path(helpers.ROOT)


@pytest.mark.slow
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


@pytest.mark.parametrize("num,zoom,names,needle", [
    (-3, 2, ["rts"], "--num=-3"), (0, 2, ["rts"], "--num=0"), (2, 0, ["rts"], "--zoom=0"),
    (2, 2, [], "--distortions is empty")])
def test_flags_that_draw_nothing_or_too_much_are_refused(num, zoom, names, needle):
    with pytest.raises(ValueError) as e:
        preview.check_flags(num, zoom, names)
    assert needle in str(e.value) and "\n" not in str(e.value)
    preview.check_flags(1, 1, ["rts"])


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--num=-3", "--num=0", "--num=2001"])
def test_cli_refuses_bad_num_in_one_line_and_writes_nothing(tmp_path, flag):
    out = tmp_path / "p.png"
    done = subprocess.run([sys.executable, "-m", "stn.experiments.data.preview", flag, "--distortions=none",
                           f"--out={out}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode != 0 and not out.exists()
    assert done.stderr.strip().startswith(f"error: {flag}") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_says_what_it_draws_at_once_and_the_file_it_wrote(tmp_path):
    """A first line before the distortions compile (so a user can tell work from a hang), and
    the absolute path of the PNG at the end."""
    out = tmp_path / "p.png"
    done = subprocess.run([sys.executable, "-m", "stn.experiments.data.preview", "--num=2",
                           "--distortions=none,rts", "--out=p.png"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("drawing 2 digits from sample under none, rts")
    assert lines[-1].startswith(f"wrote {out}: 2 rows x 2 digits") and out.exists()
