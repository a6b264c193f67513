"""Pixel-space warps on the spatial transformer's sampler (pure jnp, layer 1), as kornia and OpenCV
offer them.

Pixel coordinates: ``(x, y)`` (``(x, y, z)`` for volumes) with the centre of pixel ``[row i,
column j]`` at ``x = j``, ``y = i``: the origin is the centre of the top-left pixel, x runs along
the width and y down the height (OpenCV's and kornia's convention). A pixel-space matrix ``M``
maps *source* (input) pixels to *destination* (output) pixels, ``p_dst = M p_src`` in
homogeneous coordinates, so a warp reads every output pixel ``p`` from the input at
``M^{-1} p``:

    V(p) = U(M^{-1} p)               (affine ``[B, 2, 3]``, ``[B, 3, 4]``)
    V(p) = U(pi(H^{-1} (p, 1)))      (homography ``[B, 3, 3]``, ``[B, 4, 4]``),

with ``pi(q) = q_{:n} / q_n`` the division by the homogeneous coordinate.

The sampler itself works in normalised coordinates (``stn.sampling``: [-1, 1], torch's
``grid_sample`` convention). A pixel coordinate ``x`` on an axis of ``S`` pixels is

    x_norm = (2 x + 1) / S - 1          (align_corners=False: -1 and 1 are the outer edges)
    x_norm = 2 x / (S - 1) - 1          (align_corners=True: -1 and 1 are the corner centres;
                                         a size-1 axis maps its pixel to 0, scale 1)

(``pixel_to_normalized``), and a pixel-space matrix becomes a normalised one by conjugation,
``M_norm = N_out M N_in^{-1}`` (``normalize_matrix``), whose inverse is the ``theta`` that
``stn.transforms.affine_grid`` takes (``matrix_to_theta``). Both conventions describe the same
pixels, so a warp's values do not depend on ``align_corners`` (it only places reflection
padding's mirror lines), and they match kornia's ``warp_affine`` / ``warp_perspective`` with
either flag (kornia's 3-D warps normalise with ``align_corners=True`` whatever the flag: they
agree with these at True).

Every warp is ``stn.sampling.sample`` on a grid from ``stn.transforms``, so it takes the
sampler's kernels, paddings (``"fill"`` with ``fill_value`` included), antialiasing and methods,
and passes gradients to the image, the matrix (or boxes, or points) and ``fill_value``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from stn import sampling, transforms

__all__ = [
    "pixel_to_normalized",
    "normalize_matrix",
    "denormalize_matrix",
    "matrix_to_theta",
    "theta_to_matrix",
    "invert_affine",
    "rotation_matrix",
    "shear_matrix",
    "translation_matrix",
    "warp_affine",
    "warp_perspective",
    "crop_and_resize",
    "warp_tps",
]

Size = Sequence[int]


# ---------------------------------------------------------------- checks


def _check_size(size: Size, name: str) -> tuple[int, ...]:
    """``(height, width)`` or ``(depth, height, width)`` of positive integers, or a ValueError."""
    try:
        size = tuple(size)
    except TypeError:
        size = (size,)
    if len(size) not in (2, 3) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size):
        raise ValueError(f"{name} must be (height, width) or (depth, height, width) of positive "
                         f"integers, got {size!r}")
    return size


def _check_matrix(matrix, name: str, num_axes: int, homogeneous: bool | None) -> jax.Array:
    """``[B, n, n + 1]`` (affine) or ``[B, n + 1, n + 1]`` (homogeneous) floating matrices."""
    matrix = jnp.asarray(matrix)
    shapes = {False: (num_axes, num_axes + 1), True: (num_axes + 1, num_axes + 1)}
    allowed = [shapes[homogeneous]] if homogeneous is not None else list(shapes.values())
    if matrix.ndim != 3 or tuple(matrix.shape[1:]) not in allowed:
        expected = " or ".join(f"[B, {r}, {c}]" for r, c in allowed)
        raise ValueError(f"{name} must be {expected} for {num_axes}-D sizes, got shape "
                         f"{matrix.shape}")
    if not jnp.issubdtype(matrix.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point, got dtype {matrix.dtype}")
    return matrix


def _check_sizes(in_size: Size, out_size: Size) -> tuple[tuple[int, ...], tuple[int, ...]]:
    in_size, out_size = _check_size(in_size, "in_size"), _check_size(out_size, "out_size")
    if len(in_size) != len(out_size):
        raise ValueError(f"in_size and out_size must have the same number of axes, got "
                         f"{in_size} and {out_size}")
    return in_size, out_size


def _batch_vector(value, name: str, batch: int, length: int, dtype) -> jax.Array:
    """``value`` as ``[B, length]``: a number, ``[B]`` or ``[B, length]`` (``length`` > 1), or
    ``[length]`` / ``[B, length]``; a ValueError naming ``name`` otherwise."""
    value = jnp.asarray(value, dtype)
    if value.ndim == 0:
        return jnp.broadcast_to(value, (batch, length))
    if value.ndim == 1 and value.shape[0] == batch:
        return jnp.broadcast_to(value[:, None], (batch, length))
    if value.shape == (batch, length):
        return value
    raise ValueError(f"{name} must be a number, [B] or [B, {length}] with B = {batch}, got shape "
                     f"{value.shape}")


# ---------------------------------------------------------------- pixels <-> normalised


def pixel_to_normalized(size: Size, *, align_corners: bool = False,
                        dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """The ``[n + 1, n + 1]`` homogeneous matrix ``N`` taking pixel ``(x, y[, z], 1)`` to the
    sampler's normalised coordinates on an image of ``size`` ``(H, W)`` or ``(D, H, W)``:

        x_norm = (2 x + 1) / S - 1   (align_corners=False),   2 x / (S - 1) - 1   (True)

    (module docstring; kornia's ``normal_transform_pixel``; a size-1 axis with
    align_corners=True gets scale 1 and offset 0, as kornia, so that ``N`` stays invertible).
    """
    size = _check_size(size, "size")
    scales, offsets = [], []
    for count in size[::-1]:  # grid order x, y(, z)
        if align_corners:
            scales.append(2.0 / (count - 1) if count > 1 else 1.0)
            offsets.append(-1.0 if count > 1 else 0.0)
        else:
            scales.append(2.0 / count)
            offsets.append(1.0 / count - 1.0)
    num_axes = len(size)
    matrix = jnp.zeros((num_axes + 1, num_axes + 1), dtype)
    matrix = matrix.at[jnp.arange(num_axes), jnp.arange(num_axes)].set(jnp.asarray(scales, dtype))
    matrix = matrix.at[:num_axes, num_axes].set(jnp.asarray(offsets, dtype))
    return matrix.at[num_axes, num_axes].set(1.0)


def _homogeneous(matrix: jax.Array) -> jax.Array:
    """``[B, n, n + 1]`` affine -> ``[B, n + 1, n + 1]`` with last row ``(0, .., 0, 1)``."""
    if matrix.shape[1] == matrix.shape[2]:
        return matrix
    num_axes = matrix.shape[1]
    last = jnp.zeros((matrix.shape[0], 1, num_axes + 1), matrix.dtype).at[..., -1].set(1.0)
    return jnp.concatenate([matrix, last], axis=1)


def _like(result: jax.Array, matrix: jax.Array) -> jax.Array:
    """``result`` ``[B, n + 1, n + 1]`` cut back to ``matrix``'s shape (affine rows)."""
    return result[:, : matrix.shape[1]]


def _normalizers(in_size, out_size, align_corners, dtype):
    in_size, out_size = _check_sizes(in_size, out_size)
    return (pixel_to_normalized(in_size, align_corners=align_corners, dtype=dtype),
            pixel_to_normalized(out_size, align_corners=align_corners, dtype=dtype))


def _unnormalizer(normalizer: jax.Array) -> jax.Array:
    """``N^{-1}`` of a diagonal-plus-offset ``pixel_to_normalized`` matrix, in closed form."""
    scales = jnp.diagonal(normalizer)[:-1]
    offsets = normalizer[:-1, -1]
    num_axes = scales.shape[0]
    inverse = jnp.diag(jnp.concatenate([1.0 / scales, jnp.ones((1,), normalizer.dtype)]))
    return inverse.at[:num_axes, num_axes].set(-offsets / scales)


def normalize_matrix(matrix: jax.Array, in_size: Size, out_size: Size, *,
                     align_corners: bool = False) -> jax.Array:
    """A source-to-destination pixel matrix in normalised coordinates, ``N_out M N_in^{-1}``.

    Args:
      matrix: ``[B, 2, 3]`` / ``[B, 3, 3]`` (2-D affine / homography) or ``[B, 3, 4]`` /
        ``[B, 4, 4]`` (3-D), mapping input pixels to output pixels.
      in_size, out_size: ``(H, W)`` or ``(D, H, W)`` of the input and the output.
      align_corners: the sampler's convention for the normalised coordinates.

    Returns:
      The same shape as ``matrix``: kornia's ``normalize_homography`` (and its 3-D twin).
    """
    matrix = _check_matrix(matrix, "matrix", len(_check_size(in_size, "in_size")), None)
    n_in, n_out = _normalizers(in_size, out_size, align_corners, matrix.dtype)
    return _like(n_out @ _homogeneous(matrix) @ _unnormalizer(n_in), matrix)


def denormalize_matrix(matrix: jax.Array, in_size: Size, out_size: Size, *,
                       align_corners: bool = False) -> jax.Array:
    """The inverse of ``normalize_matrix``: ``N_out^{-1} M_norm N_in``, same shapes (kornia's
    ``denormalize_homography``)."""
    matrix = _check_matrix(matrix, "matrix", len(_check_size(in_size, "in_size")), None)
    n_in, n_out = _normalizers(in_size, out_size, align_corners, matrix.dtype)
    return _like(_unnormalizer(n_out) @ _homogeneous(matrix) @ n_in, matrix)


def _inverse(matrix: jax.Array) -> jax.Array:
    """Inverse of ``[B, n, n + 1]`` affine (closed in the affine group) or ``[B, n + 1, n + 1]``
    homogeneous matrices, same shape."""
    if matrix.shape[1] == matrix.shape[2]:
        return jnp.linalg.inv(matrix)
    linear = jnp.linalg.inv(matrix[:, :, :-1])
    shift = -jnp.einsum("bij,bj->bi", linear, matrix[:, :, -1])
    return jnp.concatenate([linear, shift[..., None]], axis=-1)


def matrix_to_theta(matrix: jax.Array, in_size: Size, out_size: Size, *,
                    align_corners: bool = False) -> jax.Array:
    """The sampler's ``theta`` of a pixel-space warp: ``N_in M^{-1} N_out^{-1}``, which maps
    normalised *output* points to normalised *input* points (paper eq. 1's direction).

    ``transforms.affine_grid(matrix_to_theta(M, in_size, out_size), *out_size)`` is the grid of
    ``warp_affine(image, M, out_size)``; a homogeneous ``[B, 3, 3]`` gives the homography that
    ``warp_perspective`` samples along. Same shapes as ``normalize_matrix``.
    """
    matrix = _check_matrix(matrix, "matrix", len(_check_size(in_size, "in_size")), None)
    n_in, n_out = _normalizers(in_size, out_size, align_corners, matrix.dtype)
    return _like(n_in @ _homogeneous(_inverse(matrix)) @ _unnormalizer(n_out), matrix)


def theta_to_matrix(theta: jax.Array, in_size: Size, out_size: Size, *,
                    align_corners: bool = False) -> jax.Array:
    """The inverse of ``matrix_to_theta``: the pixel-space source-to-destination matrix of a
    normalised ``theta`` (e.g. a ``SpatialTransformer``'s affine parameters), same shape."""
    theta = _check_matrix(theta, "theta", len(_check_size(in_size, "in_size")), None)
    n_in, n_out = _normalizers(in_size, out_size, align_corners, theta.dtype)
    inverse_pixels = _like(_unnormalizer(n_in) @ _homogeneous(theta) @ n_out, theta)
    return _inverse(inverse_pixels)


# ---------------------------------------------------------------- matrix builders


def invert_affine(matrix: jax.Array) -> jax.Array:
    """The inverse affine map, ``[A | t] -> [A^{-1} | -A^{-1} t]``, ``[B, 2, 3]`` or ``[B, 3, 4]``
    (kornia's ``invert_affine_transform``, OpenCV's ``invertAffineTransform``)."""
    matrix = jnp.asarray(matrix)
    if matrix.ndim != 3 or tuple(matrix.shape[1:]) not in ((2, 3), (3, 4)):
        raise ValueError(f"matrix must be [B, 2, 3] or [B, 3, 4], got shape {matrix.shape}")
    return _inverse(matrix)


def _centre(center, name: str = "center") -> jax.Array:
    center = jnp.asarray(center)
    if center.ndim != 2 or center.shape[1] != 2:
        raise ValueError(f"{name} must be [B, 2] pixel points (x, y), got shape {center.shape}")
    if not jnp.issubdtype(center.dtype, jnp.floating):
        center = center.astype(jnp.float32)
    return center


def rotation_matrix(center: jax.Array, angle: jax.Array, scale: jax.Array | float = 1.0
                    ) -> jax.Array:
    """Rotation by ``angle`` degrees about ``center`` with ``scale``, ``[B, 2, 3]`` in pixels:

        M = T(c) R(angle) S T(-c),   R = [[cos a, sin a], [-sin a, cos a]],   S = diag(s_x, s_y)

    so ``c`` stays put and a positive angle turns the picture counter-clockwise as displayed (y
    down), as kornia's ``get_rotation_matrix2d`` and OpenCV's ``getRotationMatrix2D``.

    Args:
      center: ``[B, 2]`` pixel points ``(x, y)``.
      angle: ``[B]`` (or a number) in degrees.
      scale: a number, ``[B]`` or ``[B, 2]`` ``(s_x, s_y)``.
    """
    center = _centre(center)
    batch, dtype = center.shape[0], center.dtype
    angle = _batch_vector(angle, "angle", batch, 1, dtype)[:, 0]
    scale = _batch_vector(scale, "scale", batch, 2, dtype)
    radians = jnp.deg2rad(angle)
    cos, sin = jnp.cos(radians), jnp.sin(radians)
    linear = jnp.stack([jnp.stack([cos * scale[:, 0], sin * scale[:, 1]], -1),
                        jnp.stack([-sin * scale[:, 0], cos * scale[:, 1]], -1)], axis=1)
    shift = center - jnp.einsum("bij,bj->bi", linear, center)
    return jnp.concatenate([linear, shift[..., None]], axis=-1)


def shear_matrix(center: jax.Array, shear_x: jax.Array | float = 0.0,
                 shear_y: jax.Array | float = 0.0) -> jax.Array:
    """Shear about ``center`` by the angles ``shear_x`` then ``shear_y`` (radians), ``[B, 2, 3]``:

        x' = x - tan(shear_x) (y - c_y),   then   y' = y - tan(shear_y) (x' - c_x),

    kornia's ``get_shear_matrix2d`` (its negative tangents included; kornia returns the
    ``[B, 3, 3]`` extension). ``shear_x``, ``shear_y``: numbers or ``[B]``.
    """
    center = _centre(center)
    batch, dtype = center.shape[0], center.dtype
    tan_x = jnp.tan(_batch_vector(shear_x, "shear_x", batch, 1, dtype)[:, 0])
    tan_y = jnp.tan(_batch_vector(shear_y, "shear_y", batch, 1, dtype)[:, 0])
    x, y = center[:, 0], center[:, 1]
    one = jnp.ones_like(tan_x)
    rows = [jnp.stack([one, -tan_x, tan_x * y], -1),
            jnp.stack([-tan_y, one + tan_x * tan_y, tan_y * (x - tan_x * y)], -1)]
    return jnp.stack(rows, axis=1)


def translation_matrix(translation: jax.Array) -> jax.Array:
    """``p -> p + t`` in pixels, ``[B, 2] -> [B, 2, 3]`` (``[B, 3] -> [B, 3, 4]`` for volumes)."""
    translation = jnp.asarray(translation)
    if translation.ndim != 2 or translation.shape[1] not in (2, 3):
        raise ValueError(f"translation must be [B, 2] (x, y) or [B, 3] (x, y, z) pixels, got "
                         f"shape {translation.shape}")
    if not jnp.issubdtype(translation.dtype, jnp.floating):
        translation = translation.astype(jnp.float32)
    eye = jnp.broadcast_to(jnp.eye(translation.shape[1], dtype=translation.dtype),
                           (translation.shape[0],) + (translation.shape[1],) * 2)
    return jnp.concatenate([eye, translation[..., None]], axis=-1)


# ---------------------------------------------------------------- warps


def _check_image(image) -> jax.Array:
    image = jnp.asarray(image)
    if image.ndim not in (4, 5):
        raise ValueError(f"image must be [B, H, W, C] or a volume [B, D, H, W, C], got shape "
                         f"{image.shape}")
    return image


def _matrix_batch(matrix: jax.Array, batch: int, name: str) -> jax.Array:
    """``matrix`` with the image's batch: equal, or 1 (one matrix for every image)."""
    if matrix.shape[0] == batch:
        return matrix
    if matrix.shape[0] == 1:
        return jnp.broadcast_to(matrix, (batch, *matrix.shape[1:]))
    raise ValueError(f"{name} batch must be 1 or the image's {batch}, got shape {matrix.shape}")


def _out_size(out_size: Size, image: jax.Array) -> tuple[int, ...]:
    out_size = _check_size(out_size, "out_size")
    if len(out_size) != image.ndim - 2:
        expected = "(height, width)" if image.ndim == 4 else "(depth, height, width)"
        raise ValueError(f"out_size must be {expected} for an image of shape {image.shape}, got "
                         f"{out_size}")
    return out_size


def _projective_grid(theta: jax.Array, out_size: tuple[int, ...],
                     align_corners: bool) -> jax.Array:
    """``pi(theta (x_t, 1))`` at every output point: ``[B, n + 1, n + 1]`` -> ``[B, *out, n]``.

    The homogeneous coordinate is kept at least 1e-6 from zero (sign kept), as
    ``transforms.projective_grid`` does, so points at infinity sample the padding.
    """
    target = transforms.base_grid(*out_size, align_corners=align_corners, dtype=theta.dtype)
    points = jnp.concatenate([target, jnp.ones(target.shape[:-1] + (1,), theta.dtype)], -1)
    mapped = jnp.einsum("bij,...j->b...i", theta, points)
    last = mapped[..., -1:]
    eps = jnp.asarray(1e-6, theta.dtype)
    last = jnp.where(jnp.abs(last) < eps, jnp.where(last < 0, -eps, eps), last)
    return mapped[..., :-1] / last


def warp_affine(image: jax.Array, matrix: jax.Array, out_size: Size, *,
                align_corners: bool = False, kernel: sampling.KernelSpec = "bilinear",
                padding: str = "zeros", fill_value: jax.Array | float | None = None,
                antialias: bool = False, max_scale: float | None = None,
                method: str = "auto") -> jax.Array:
    """``V(p) = U(M^{-1} p)``: the image warped by a source-to-destination pixel matrix.

    Args:
      image: ``[B, H, W, C]`` or a volume ``[B, D, H, W, C]``.
      matrix: ``[B, 2, 3]`` (``[B, 3, 4]`` for a volume) in pixels, mapping input pixels to
        output pixels (kornia's and OpenCV's ``warp_affine`` / ``warpAffine`` convention); a
        batch of 1 warps every image alike.
      out_size: ``(height, width)`` (``(depth, height, width)``) of the output.
      align_corners: the sampler's normalisation; the warp's geometry is the same either way
        (module docstring), it places the mirror lines of reflection padding.
      kernel, padding, fill_value, antialias, max_scale, method: as ``stn.sampling.sample``
        (``padding="fill"`` reads ``fill_value`` outside, kornia's ``padding_mode="fill"``).

    Returns:
      ``[B, *out_size, C]``.
    """
    image = _check_image(image)
    num_axes = image.ndim - 2
    matrix = _matrix_batch(_check_matrix(matrix, "matrix", num_axes, False), image.shape[0],
                           "matrix")
    out_size = _out_size(out_size, image)
    theta = matrix_to_theta(matrix, image.shape[1:-1], out_size, align_corners=align_corners)
    grid = transforms.affine_grid(theta, *out_size, align_corners=align_corners)
    return sampling.sample(image, grid, kernel=kernel, padding=padding,
                           align_corners=align_corners, fill_value=fill_value,
                           antialias=antialias, max_scale=max_scale, method=method)


def warp_perspective(image: jax.Array, homography: jax.Array, out_size: Size, *,
                     align_corners: bool = False, kernel: sampling.KernelSpec = "bilinear",
                     padding: str = "zeros", fill_value: jax.Array | float | None = None,
                     antialias: bool = False, max_scale: float | None = None,
                method: str = "auto") -> jax.Array:
    """``V(p) = U(pi(H^{-1} (p, 1)))``: the image warped by a source-to-destination homography.

    Args:
      image: ``[B, H, W, C]`` or a volume ``[B, D, H, W, C]``.
      homography: ``[B, 3, 3]`` (``[B, 4, 4]`` for a volume) in pixels, mapping input pixels to
        output pixels (kornia's ``warp_perspective``, OpenCV's ``warpPerspective``); any nonzero
        multiple is the same warp; a batch of 1 warps every image alike.
      out_size, align_corners, kernel, padding, fill_value, antialias, max_scale, method: as
        ``warp_affine``.

    Returns:
      ``[B, *out_size, C]``. Output points whose source lies at infinity sample the padding.
    """
    image = _check_image(image)
    num_axes = image.ndim - 2
    homography = _matrix_batch(_check_matrix(homography, "homography", num_axes, True),
                               image.shape[0], "homography")
    out_size = _out_size(out_size, image)
    theta = matrix_to_theta(homography, image.shape[1:-1], out_size, align_corners=align_corners)
    grid = _projective_grid(theta, out_size, align_corners)
    return sampling.sample(image, grid, kernel=kernel, padding=padding,
                           align_corners=align_corners, fill_value=fill_value,
                           antialias=antialias, max_scale=max_scale, method=method)


def _box_theta(boxes: jax.Array, in_size: tuple[int, int], size: tuple[int, int],
               align_corners: bool) -> jax.Array:
    """``[..., 4]`` pixel boxes -> ``[..., 2, 3]`` normalised ``theta`` (output -> input).

    Output pixel ``j`` of ``w`` reads ``x0 + (x1 - x0) j / (w - 1)`` (the box's centre when
    ``w = 1``), and likewise in y: a scale and a shift per axis, the attention transform of
    paper eq. 2 with one scale per axis, conjugated into normalised coordinates.
    """
    lead = (1,) * (boxes.ndim - 1)  # per-axis constants broadcast against [..., 2]
    n_in = pixel_to_normalized(in_size, align_corners=align_corners, dtype=boxes.dtype)
    n_out = pixel_to_normalized(size, align_corners=align_corners, dtype=boxes.dtype)
    out_scales, out_offsets = (jnp.diagonal(n_out)[:2].reshape(*lead, 2),
                               n_out[:2, 2].reshape(*lead, 2))
    in_scales, in_offsets = jnp.diagonal(n_in)[:2].reshape(*lead, 2), n_in[:2, 2].reshape(*lead, 2)
    low, high = boxes[..., :2], boxes[..., 2:]
    steps = jnp.asarray([max(size[1] - 1, 1), max(size[0] - 1, 1)], boxes.dtype).reshape(*lead, 2)
    single = jnp.asarray([size[1] == 1, size[0] == 1]).reshape(*lead, 2)
    pixel_scale = jnp.where(single, 0.0, (high - low) / steps)  # input px per output px
    pixel_shift = jnp.where(single, 0.5 * (low + high), low)
    # x_norm_in = a_in (s j + t) + b_in  with  j = (x_norm_out - b_out) / a_out
    scale = in_scales * pixel_scale / out_scales
    shift = in_scales * (pixel_shift - pixel_scale * out_offsets / out_scales) + in_offsets
    zero = jnp.zeros_like(scale[..., 0])
    rows = [jnp.stack([scale[..., 0], zero, shift[..., 0]], -1),
            jnp.stack([zero, scale[..., 1], shift[..., 1]], -1)]
    return jnp.stack(rows, axis=-2)


def crop_and_resize(image: jax.Array, boxes: jax.Array, size: Size, *,
                    align_corners: bool = False, kernel: sampling.KernelSpec = "bilinear",
                    padding: str = "zeros", fill_value: jax.Array | float | None = None,
                    antialias: bool = False, max_scale: float | None = None,
                method: str = "auto") -> jax.Array:
    """One ``size`` crop of ``image`` per box, each box resized to fill it.

    Args:
      image: ``[B, H, W, C]``.
      boxes: ``[B, 4]`` (one box per image) or ``[B, N, 4]`` (``N`` per image), each ``(x0, y0,
        x1, y1)`` in pixels: the centres of the box's top-left and bottom-right pixels, both
        inclusive (``(1, 1, 2, 2)`` is a 2x2 block), so the output's corner pixels read the box's
        corners (kornia's ``crop_and_resize`` with ``boxes`` as corner points, TF's
        ``crop_and_resize`` in pixels). Boxes may reach outside the image (padding) and be
        flipped (``x1 < x0`` mirrors the crop).
      size: ``(height, width)`` of every crop.
      align_corners, kernel, padding, fill_value, antialias, max_scale, method: as
        ``warp_affine``.

    Returns:
      ``[B, height, width, C]``, or ``[B, N, height, width, C]`` for ``[B, N, 4]`` boxes.
    """
    image = _check_image(image)
    if image.ndim != 4:
        raise ValueError(f"crop_and_resize needs an image [B, H, W, C], got shape {image.shape}")
    boxes = jnp.asarray(boxes)
    batch = image.shape[0]
    if boxes.ndim not in (2, 3) or boxes.shape[0] != batch or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [B, 4] or [B, N, 4] (x0, y0, x1, y1) with B = {batch}, "
                         f"got shape {boxes.shape}")
    if not jnp.issubdtype(boxes.dtype, jnp.floating):
        boxes = boxes.astype(jnp.float32)
    size = _check_size(size, "size")
    if len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size}")
    per_image = boxes if boxes.ndim == 3 else boxes[:, None]
    count = per_image.shape[1]
    theta = _box_theta(per_image, image.shape[1:3], size, align_corners)
    grid = transforms.affine_grid(theta.reshape(-1, 2, 3), *size, align_corners=align_corners)
    grid = grid.reshape(batch, count, *size, 2)
    options = dict(kernel=kernel, padding=padding, align_corners=align_corners,
                   fill_value=fill_value, antialias=antialias, max_scale=max_scale,
                   method=method)
    if antialias:  # footprints by finite differences: each crop's grid on its own
        crops = jax.vmap(lambda g: sampling.sample(image, g, **options), in_axes=1,
                         out_axes=1)(grid)
    else:  # the crops stacked along the height: one sampler call
        stacked = sampling.sample(image, grid.reshape(batch, count * size[0], size[1], 2),
                                  **options)
        crops = stacked.reshape(batch, count, *size, image.shape[-1])
    return crops if boxes.ndim == 3 else crops[:, 0]


def warp_tps(image: jax.Array, source_points: jax.Array, target_points: jax.Array,
             out_size: Size, *, align_corners: bool = False,
             kernel: sampling.KernelSpec = "bilinear", padding: str = "zeros",
             fill_value: jax.Array | float | None = None, antialias: bool = False,
             max_scale: float | None = None, method: str = "auto") -> jax.Array:
    """The thin-plate spline warp that moves ``source_points`` of the input to ``target_points``
    of the output, in pixels (``transforms.tps_interpolate``, Bookstein 1989):

        V(p) = U(f(p)),   f the thin-plate spline with f(target_k) = source_k

    A thin-plate spline is unchanged by rotations, translations and uniform scalings of the
    plane, so this pixel-space spline depends on neither ``align_corners`` nor the images'
    aspect ratio (``transforms.tps_points_grid``, which fits in normalised coordinates, does
    where the image is not square).

    Args:
      image: ``[B, H, W, C]``.
      source_points, target_points: ``[B, K, 2]`` pixel points ``(x, y)``, ``K >= 3`` not all on
        one line; a batch of 1 is shared by every image.
      out_size: ``(height, width)`` of the output.
      align_corners, kernel, padding, fill_value, antialias, max_scale, method: as
        ``warp_affine``.

    Returns:
      ``[B, *out_size, C]``; gradients reach the image and both point sets.
    """
    image = _check_image(image)
    if image.ndim != 4:
        raise ValueError(f"warp_tps needs an image [B, H, W, C], got shape {image.shape}")
    out_size = _out_size(out_size, image)
    source, target = jnp.asarray(source_points), jnp.asarray(target_points)
    shapes_ok = (source.ndim == 3 and target.ndim == 3 and source.shape[1:] == target.shape[1:]
                 and source.shape[2] == 2 and source.shape[1] >= 3
                 and len({source.shape[0], target.shape[0]} - {1}) <= 1)
    if not shapes_ok:
        raise ValueError(f"source_points and target_points must be [B, K, 2] pixel points (x, y) "
                         f"with the same K >= 3 (batch B or 1), got shapes {source.shape} and "
                         f"{target.shape}")
    dtype = jnp.promote_types(jnp.result_type(source, target), jnp.float32)
    rows, columns = jnp.meshgrid(jnp.arange(out_size[0], dtype=dtype),
                                 jnp.arange(out_size[1], dtype=dtype), indexing="ij")
    pixels = jnp.stack([columns, rows], axis=-1).reshape(1, -1, 2)  # output pixel centres (x, y)
    mapped = transforms.tps_interpolate(pixels, target.astype(dtype), source.astype(dtype))
    n_in = pixel_to_normalized(image.shape[1:3], align_corners=align_corners, dtype=dtype)
    grid = mapped * jnp.diagonal(n_in)[None, None, :2] + n_in[None, None, :2, 2]
    grid = _matrix_batch(grid.reshape(-1, *out_size, 2), image.shape[0], "source_points")
    return sampling.sample(image, grid, kernel=kernel, padding=padding,
                           align_corners=align_corners, fill_value=fill_value,
                           antialias=antialias, max_scale=max_scale, method=method)
