"""Grid generators of the spatial transformer (Jaderberg et al. 2015, section 3.2).

A grid generator maps every pixel ``(x_t, y_t)`` of the regular output grid ``G`` (normalised to
[-1, 1]) to a source point ``(x_s, y_s) = T_theta(x_t, y_t)`` in the input, in the same
normalised coordinates. The result is a sampling grid ``[B, H_out, W_out, 2]`` with last axis
``(x, y)`` for ``stn.sampling.sample``; for volumes ``[B, D_out, H_out, W_out, 3]`` with last
axis ``(x, y, z)`` (x along the width, y the height, z the depth).

Transforms and their parameters (batch first):

* ``affine``      ``[B, 2, 3]`` (flat ``[B, 6]``, row-major): paper eq. 1,
  ``(x_s, y_s)^T = theta (x_t, y_t, 1)^T``.
* ``attention``   ``[B, 3]`` = ``(s, t_x, t_y)``: paper eq. 2, ``theta = [[s, 0, t_x], [0, s, t_y]]``.
* ``projective``  ``[B, 8]``: a homography ``H`` with ``H[2, 2] = 1``,
  ``x_s = (h0 x + h1 y + h2) / (h6 x + h7 y + 1)``, ``y_s = (h3 x + h4 y + h5) / (h6 x + h7 y + 1)``.
* ``tps``         ``[B, K, 2]``: a thin-plate spline (Bookstein 1989) given by the source
  positions of ``K`` control points laid on a regular ``g x g`` grid over [-1, 1]^2
  (``tps`` is 4x4 = 16 points as in the paper; ``tps3x3`` is 3x3). Through arbitrary control
  points (a target and a source set): ``tps_points_grid``, ``tps_interpolate``.

Volumes (``ndim == 3``):

* ``affine3d``    ``[B, 3, 4]`` (flat ``[B, 12]``):
  ``(x_s, y_s, z_s)^T = theta (x_t, y_t, z_t, 1)^T``, torch's 5-D ``affine_grid``.
* ``attention3d`` ``[B, 4]`` = ``(s, t_x, t_y, t_z)``:
  ``theta = [[s, 0, 0, t_x], [0, s, 0, t_y], [0, 0, s, t_z]]``.

Each transform has ``ndim``, ``num_params``, ``identity()`` (flat, used as the localisation net's
initial bias) and ``grid(params, *size, align_corners=...)`` for any output size ``(height,
width)`` or ``(depth, height, width)``.

Dense warps (``displacement_grid``, ``compose_displacements``, ``integrate_velocity``): a
displacement field ``u`` is ``[B, H, W, 2]`` or ``[B, D, H, W, 3]``, last axis ``(u_x, u_y[,
u_z])`` in the grid's axis order, defined on the output grid: output point ``p`` samples the
input at ``p + u(p)``. Units are pixels of the input by default (``u_x = 1`` moves one pixel
along the width; the input is taken to have the field's size), or the grid's normalised units
with ``units="normalized"`` (then ``u_x = 2 / W`` is one pixel for ``align_corners=False``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from stn import sampling

__all__ = [
    "base_grid", "affine_grid", "attention_to_affine", "compose_affine", "projective_grid",
    "tps_grid", "tps_radial_basis", "tps_control_points", "Transform", "thin_plate_spline",
    "names", "get", "NAMES", "displacement_grid", "compose_displacements", "integrate_velocity",
    "pixel_scale", "UNITS",
]


def base_grid(
    *size: int, align_corners: bool = False, dtype: jnp.dtype = jnp.float32
) -> jax.Array:
    """The regular target grid ``G``: pixel centres in normalised coordinates.

    ``size`` is ``(height, width)`` -> ``[H, W, 2]`` with last axis ``(x, y)``, or ``(depth,
    height, width)`` -> ``[D, H, W, 3]`` with last axis ``(x, y, z)``. align_corners=True puts the
    corner pixel centres at -1 and 1; False puts the corner pixels' outer edges there, so centres
    sit at ``(2 i + 1) / size - 1`` (as torch's affine_grid).
    """
    _check_size(size)
    return jnp.asarray(_base_grid_np(size, align_corners), dtype)


def _check_size(size: tuple) -> None:
    def positive_integer(s) -> bool:
        try:
            return not isinstance(s, (bool, np.bool_)) and int(s) == s and s >= 1
        except (TypeError, ValueError):
            return False

    if len(size) not in (2, 3) or not all(positive_integer(s) for s in size):
        raise ValueError("grid size must be (height, width) or (depth, height, width) of positive "
                         f"integers, got {size}")


def _output_size(size: tuple, batch: int | None) -> tuple[int, ...]:
    """``(height, width)`` or ``(depth, height, width)`` from ``affine_grid``'s ``*size``: the
    sizes themselves, one sequence of them, or torch's ``(N, C, H, W)`` / ``(N, C, D, H, W)``
    (``N`` must be the batch size; ``C`` is not used)."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):  # torch.Size is a tuple
        size = tuple(size[0])
        if len(size) in (4, 5):
            count = size[0]
            if batch is not None and count != batch:
                raise ValueError(f"size {size} is torch's (N, C, ...) with N = {count}, but "
                                 f"theta holds {batch} transforms")
            size = size[2:]
    _check_size(size)
    return tuple(int(s) for s in size)


def _base_grid_np(size: tuple[int, ...], align_corners: bool) -> np.ndarray:
    """``base_grid`` in float64 NumPy, for precomputations."""

    def centres(count: int) -> np.ndarray:
        if align_corners:
            return np.linspace(-1.0, 1.0, count) if count > 1 else np.zeros(1)
        return (2.0 * np.arange(count) + 1.0) / count - 1.0

    axes = np.meshgrid(*[centres(int(count)) for count in size], indexing="ij")
    return np.stack(axes[::-1], axis=-1)  # image order (z,) y, x -> grid order x, y (, z)


def _check_batch(params: jax.Array, shapes: tuple[tuple[int, ...], ...], name: str) -> None:
    if params.ndim < 2 or tuple(params.shape[1:]) not in shapes:
        expected = " or ".join("[B, " + ", ".join(map(str, shape)) + "]" for shape in shapes)
        raise ValueError(f"{name} parameters must be {expected}, got shape {params.shape}")


def affine_grid(theta: jax.Array, *size: int, align_corners: bool = False) -> jax.Array:
    """Paper eq. 1: ``(x_s, y_s)^T = theta @ (x_t, y_t, 1)^T`` at every pixel of the output grid;
    for volumes ``(x_s, y_s, z_s)^T = theta @ (x_t, y_t, z_t, 1)^T``.

    Args:
      theta: ``[B, 2, 3]`` affine matrices (or flat ``[B, 6]``, row-major), or for a volume
        ``[B, 3, 4]`` (flat ``[B, 12]``).
      *size: output grid size, ``height, width`` (or ``depth, height, width``), or one sequence:
        ``(height, width)``, ``(depth, height, width)`` or torch's ``(B, C, H, W)`` /
        ``(B, C, D, H, W)``.
      align_corners: as ``torch.nn.functional.affine_grid``.

    Returns:
      ``[B, *size, n]`` (n = 2 or 3), numerically the same as torch's ``affine_grid(theta, (B, C,
      *size), align_corners)``.
    """
    theta = jnp.asarray(theta)
    size = _output_size(size, theta.shape[0] if theta.ndim else None)
    num_axes = len(size)
    matrix = (num_axes, num_axes + 1)
    _check_batch(theta, (matrix, (matrix[0] * matrix[1],)),
                 "affine" if num_axes == 2 else "affine3d")
    theta = theta.reshape(theta.shape[0], *matrix)
    target = base_grid(*size, align_corners=align_corners, dtype=theta.dtype)[None]
    ones = (1,) * num_axes
    coefficient = lambda r, c: theta[:, r, c].reshape(-1, *ones)  # noqa: E731  [B, 1, .., 1]
    source = []
    for row in range(num_axes):
        value = coefficient(row, 0) * target[..., 0]
        for column in range(1, num_axes):
            value = value + coefficient(row, column) * target[..., column]
        source.append(value + coefficient(row, num_axes))
    return jnp.stack(source, axis=-1)


def attention_to_affine(params: jax.Array) -> jax.Array:
    """Paper eq. 2: ``(s, t_x, t_y)`` -> ``[[s, 0, t_x], [0, s, t_y]]``, ``[B, 3] -> [B, 2, 3]``;
    for volumes ``(s, t_x, t_y, t_z)`` -> ``s I`` beside ``t``, ``[B, 4] -> [B, 3, 4]``."""
    params = jnp.asarray(params)
    _check_batch(params, ((3,), (4,)), "attention")
    num_axes = params.shape[1] - 1
    scale = params[:, :1, None] * jnp.eye(num_axes, dtype=params.dtype)[None]
    return jnp.concatenate([scale, params[:, 1:, None]], axis=-1)


def compose_affine(outer: jax.Array, inner: jax.Array) -> jax.Array:
    """The affine map ``p -> T_outer(T_inner(p))`` (paper eq. 1 applied twice), ``[B, 2, 3]``.

    With ``T(p) = A p + t``: ``A = A_outer A_inner`` and ``t = A_outer t_inner + t_outer``. Used
    to map a transformer's grid that acts on another transformer's output back into the frame of
    the first one's input (transformers in series, e.g. ST-CNN Multi).
    """
    outer, inner = jnp.asarray(outer), jnp.asarray(inner)
    _check_batch(outer, ((2, 3),), "affine")
    _check_batch(inner, ((2, 3),), "affine")
    linear = jnp.einsum("bij,bjk->bik", outer[:, :, :2], inner[:, :, :2])
    shift = jnp.einsum("bij,bj->bi", outer[:, :, :2], inner[:, :, 2]) + outer[:, :, 2]
    return jnp.concatenate([linear, shift[:, :, None]], axis=-1)


def projective_grid(
    params: jax.Array, height: int, width: int, *, align_corners: bool = False
) -> jax.Array:
    """Homography with ``H[2, 2] = 1``: ``(x_s, y_s) = (H (x_t, y_t, 1)^T)_{0,1} / (...)_2``.

    Args:
      params: ``[B, 8]``, the first eight entries of ``H`` in row-major order.

    The denominator is kept at least 1e-6 away from zero (sign preserved) so that a degenerate
    homography gives far-away points (sampled as padding), not inf or NaN.
    """
    params = jnp.asarray(params)
    _check_batch(params, ((8,),), "projective")
    target = base_grid(height, width, align_corners=align_corners, dtype=params.dtype)[None]
    x_t, y_t = target[..., 0], target[..., 1]
    h = lambda k: params[:, k, None, None]  # noqa: E731  [B, 1, 1]
    numerator_x = h(0) * x_t + h(1) * y_t + h(2)
    numerator_y = h(3) * x_t + h(4) * y_t + h(5)
    denominator = h(6) * x_t + h(7) * y_t + 1.0
    eps = jnp.asarray(1e-6, params.dtype)
    denominator = jnp.where(
        jnp.abs(denominator) < eps, jnp.where(denominator < 0, -eps, eps), denominator
    )
    return jnp.stack([numerator_x / denominator, numerator_y / denominator], axis=-1)


def tps_radial_basis(squared_distance: np.ndarray) -> np.ndarray:
    """The thin-plate kernel ``U(r) = r^2 log r^2`` of squared distances, with its limit 0 at r = 0.

    ``where`` guards the log (no ``0 * log 0 = nan``). Used only in float64 precomputation.
    """
    positive = squared_distance > 0
    safe = np.where(positive, squared_distance, 1.0)
    return np.where(positive, safe * np.log(safe), 0.0)


def tps_control_points(grid_size: int) -> np.ndarray:
    """``grid_size**2`` control points on a regular grid over [-1, 1]^2, ``[K, 2]`` as (x, y)."""
    if grid_size < 2:
        raise ValueError(f"a TPS needs a control grid of at least 2x2, got {grid_size}")
    axis = np.linspace(-1.0, 1.0, grid_size)
    xs, ys = np.meshgrid(axis, axis)
    return np.stack([xs.ravel(), ys.ravel()], axis=-1)


@functools.lru_cache(maxsize=None)
def _tps_system_inverse(grid_size: int) -> np.ndarray:
    """Inverse of the TPS system ``L = [[K, P], [P^T, 0]]`` for one control layout (float64).

    ``K_ij = U(|c_i - c_j|)``, ``P = [1, x, y]`` of the control points. Solving
    ``L [w; a] = [v; 0]`` gives the spline through values ``v`` at the control points.
    Computed once per layout and cached.
    """
    control = tps_control_points(grid_size)
    count = control.shape[0]
    squared = ((control[:, None, :] - control[None, :, :]) ** 2).sum(-1)
    kernel = tps_radial_basis(squared)
    affine = np.concatenate([np.ones((count, 1)), control], axis=1)
    system = np.zeros((count + 3, count + 3))
    system[:count, :count] = kernel
    system[:count, count:] = affine
    system[count:, :count] = affine.T
    return np.linalg.inv(system)


@functools.lru_cache(maxsize=64)
def _tps_interpolation_matrix(
    grid_size: int, height: int, width: int, align_corners: bool
) -> np.ndarray:
    """``M`` [H*W, K] such that the TPS grid is ``M @ params`` (``params`` [K, 2]).

    Row ``p`` is ``[U(|p - c_k|)_k, 1, x_p, y_p] @ L^-1[:, :K]``: the spline is linear in the
    control points' source positions, so the whole warp is one matrix product.
    """
    control = tps_control_points(grid_size)
    target = _base_grid_np((height, width), align_corners).reshape(-1, 2)
    squared = ((target[:, None, :] - control[None, :, :]) ** 2).sum(-1)
    radial = tps_radial_basis(squared)
    basis = np.concatenate([radial, np.ones((target.shape[0], 1)), target], axis=1)
    return basis @ _tps_system_inverse(grid_size)[:, : control.shape[0]]


def tps_grid(
    params: jax.Array, height: int, width: int, *, align_corners: bool = False
) -> jax.Array:
    """Thin-plate spline grid through the control points' source positions ``params`` [B, K, 2].

    ``T(p) = a_0 + a_x x + a_y y + sum_k w_k U(|p - c_k|)`` with ``T(c_k) = params_k``. Written as
    ``base + M @ (params - c)`` (``M`` precomputed per layout and size, which reproduces affine
    maps exactly) so that the identity parameters give exactly the regular grid.
    """
    params = jnp.asarray(params)
    count = params.shape[1] if params.ndim == 3 else -1
    grid_size = int(round(np.sqrt(count))) if count > 0 else 0
    if params.ndim != 3 or params.shape[2] != 2 or grid_size * grid_size != count:
        raise ValueError(
            f"tps parameters must be [B, K, 2] with K a square (9, 16, ...), got {params.shape}"
        )
    control = jnp.asarray(tps_control_points(grid_size), params.dtype)[None]
    matrix = jnp.asarray(
        _tps_interpolation_matrix(grid_size, height, width, align_corners), params.dtype
    )
    offsets = jnp.einsum("pk,bkd->bpd", matrix, params - control)
    target = base_grid(height, width, align_corners=align_corners, dtype=params.dtype)[None]
    return target + offsets.reshape(params.shape[0], height, width, 2)


def _tps_kernel(squared_distance: jax.Array) -> jax.Array:
    """``U(r) = r^2 log r^2`` of squared distances in jnp, 0 at r = 0 (``tps_radial_basis``);
    the ``where`` keeps ``log 0`` out of every derivative."""
    positive = squared_distance > 0
    safe = jnp.where(positive, squared_distance, 1.0)
    return jnp.where(positive, safe * jnp.log(safe), 0.0)


def _tps_basis(points: jax.Array, control: jax.Array) -> jax.Array:
    """``[B, P, K + 3]`` rows ``[U(|p - c_k|)_k, 1, x, y]`` of points ``[B, P, 2]``."""
    squared = jnp.sum(jnp.square(points[:, :, None, :] - control[:, None, :, :]), axis=-1)
    ones = jnp.ones(points.shape[:-1] + (1,), points.dtype)
    return jnp.concatenate([_tps_kernel(squared), ones, points], axis=-1)


def _check_point_set(points, name: str) -> jax.Array:
    points = jnp.asarray(points)
    if points.ndim != 3 or points.shape[-1] != 2:
        raise ValueError(f"{name} must be [B, K, 2] points (x, y), got shape {points.shape}")
    if not jnp.issubdtype(points.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point, got dtype {points.dtype}")
    return points


def _check_tps_pairs(control: jax.Array, values: jax.Array, control_name: str,
                     values_name: str) -> None:
    """The same K >= 3 points in both sets, batches equal or 1; one-line errors."""
    if control.shape[1] != values.shape[1] or control.shape[1] < 3:
        raise ValueError(f"{control_name} and {values_name} must hold the same K >= 3 points, got "
                         f"shapes {control.shape} and {values.shape}")
    if len({control.shape[0], values.shape[0]} - {1}) > 1:
        raise ValueError(f"{control_name} and {values_name} batches must agree (or be 1), got "
                         f"shapes {control.shape} and {values.shape}")


def tps_interpolate(points: jax.Array, control: jax.Array, values: jax.Array) -> jax.Array:
    """The thin-plate spline through ``values`` at ``control`` (Bookstein 1989), at ``points``:

        f(p) = a_0 + a_x x + a_y y + sum_k w_k U(|p - c_k|),   U(r) = r^2 log r^2,

    with ``f(c_k) = v_k``, ``sum_k w_k = 0`` and ``sum_k w_k c_k = 0``: the system
    ``[[K, P], [P^T, 0]] [w; a] = [v; 0]`` (``K_jk = U(|c_j - c_k|)``, ``P = [1, c]``) solved
    per example, so gradients reach all three arguments. Affine maps are reproduced exactly; a
    rotation, translation or uniform scaling of ``points`` and ``control`` together leaves ``f``
    unchanged. Any frame (pixels or normalised), the same for all three.

    Args:
      points: ``[B, P, 2]`` where to evaluate.
      control: ``[B, K, 2]`` control points, ``K >= 3`` and not all on one line (else the
        system is singular and the result not finite).
      values: ``[B, K, 2]`` the spline's values there.

    Each batch may be 1 (shared). Returns ``[B, P, 2]``.
    """
    names = ("points", "control", "values")
    points, control, values = (_check_point_set(a, n)
                               for a, n in zip((points, control, values), names))
    _check_tps_pairs(control, values, "control", "values")
    if len({a.shape[0] for a in (points, control, values)} - {1}) > 1:
        raise ValueError(f"points, control and values batches must agree (or be 1), got shapes "
                         f"{points.shape}, {control.shape}, {values.shape}")
    dtype = jnp.result_type(points, control, values)
    points, control, values = (a.astype(dtype) for a in (points, control, values))
    count = control.shape[1]
    affine = _tps_basis(control, control)[..., count:]  # [B, K, 3] = [1, c]
    system = jnp.concatenate([
        jnp.concatenate([_tps_basis(control, control)[..., :count], affine], axis=-1),
        jnp.concatenate([jnp.swapaxes(affine, 1, 2),
                         jnp.zeros((control.shape[0], 3, 3), dtype)], axis=-1)], axis=1)
    right = jnp.concatenate([values, jnp.zeros((values.shape[0], 3, 2), dtype)], axis=1)
    batch = max(points.shape[0], control.shape[0], values.shape[0])
    system = jnp.broadcast_to(system, (batch, *system.shape[1:]))
    right = jnp.broadcast_to(right, (batch, *right.shape[1:]))
    coefficients = jnp.linalg.solve(system, right)  # [B, K + 3, 2]
    basis = _tps_basis(points, control)
    return jnp.einsum("bpk,bkd->bpd", jnp.broadcast_to(basis, (batch, *basis.shape[1:])),
                      coefficients)


def tps_points_grid(source: jax.Array, target: jax.Array, height: int, width: int, *,
                    align_corners: bool = False) -> jax.Array:
    """Thin-plate spline grid through arbitrary control points, in normalised coordinates:
    output point ``target_k`` samples input point ``source_k`` (``tps_interpolate`` at the base
    grid), kornia's ``warp_image_tps`` with the weights of the spline through them.

    ``tps_grid(params, ...)`` is the case ``target`` = the regular control grid. The spline is
    fitted in normalised units, which stretch x and y differently on a non-square image;
    ``stn.warps.warp_tps`` fits in pixels instead.

    Args:
      source, target: ``[B, K, 2]`` points ``(x, y)`` in [-1, 1] units (batch 1: shared).

    Returns:
      ``[B, height, width, 2]``.
    """
    _check_size((height, width))
    source, target = _check_point_set(source, "source"), _check_point_set(target, "target")
    _check_tps_pairs(target, source, "target", "source")
    grid = base_grid(height, width, align_corners=align_corners, dtype=target.dtype)
    mapped = tps_interpolate(grid.reshape(1, -1, 2), target, source)
    return mapped.reshape(-1, height, width, 2)


@dataclasses.dataclass(frozen=True)
class Transform:
    """A named parameterisation ``theta`` -> sampling grid.

    Attributes:
      name: registry name.
      param_shape: shape of one example's parameters (without the batch axis).
      identity_params: the parameters of the identity warp, in ``param_shape``.
      grid_fn: ``(params [B, *param_shape], *size, align_corners=...) -> [B, *size, ndim]``.
      ndim: 2 for images (size ``height, width``), 3 for volumes (``depth, height, width``).
    """

    name: str
    param_shape: tuple[int, ...]
    identity_params: tuple[float, ...]
    grid_fn: Callable[..., jax.Array]
    ndim: int = 2

    @property
    def num_params(self) -> int:
        """Length of the flat parameter vector a localisation net regresses."""
        return int(np.prod(self.param_shape))

    def identity(self, dtype: jnp.dtype = jnp.float32) -> jax.Array:
        """Flat ``[num_params]`` parameters of the identity transform (the loc net's bias init)."""
        return jnp.asarray(self.identity_params, dtype)

    def grid(self, params: jax.Array, *size: int, align_corners: bool = False) -> jax.Array:
        """Sampling grid ``[B, *size, ndim]`` from ``[B, num_params]`` or structured params;
        ``size`` is ``height, width`` (``ndim`` 2) or ``depth, height, width`` (``ndim`` 3)."""
        if len(size) != self.ndim:
            expected = "height, width" if self.ndim == 2 else "depth, height, width"
            raise ValueError(f"{self.name} needs an output size ({expected}), got {size}")
        params = jnp.asarray(params)
        if params.ndim == 2 and params.shape[1] == self.num_params:
            params = params.reshape(params.shape[0], *self.param_shape)
        if params.ndim < 2 or tuple(params.shape[1:]) != self.param_shape:
            expected = f"[B, {self.num_params}]"
            if self.param_shape != (self.num_params,):
                expected += f" or [B, {', '.join(map(str, self.param_shape))}]"
            raise ValueError(f"{self.name} parameters must be {expected}, got shape "
                             f"{params.shape}")
        return self.grid_fn(params, *size, align_corners=align_corners)


def _attention_grid(params, *size, align_corners=False):
    return affine_grid(attention_to_affine(params), *size, align_corners=align_corners)


def thin_plate_spline(grid_size: int = 4) -> Transform:
    """A TPS transform over a ``grid_size x grid_size`` control grid (16 points by default)."""
    control = tps_control_points(grid_size)
    return Transform(
        name="tps" if grid_size == 4 else f"tps{grid_size}x{grid_size}",
        param_shape=(grid_size * grid_size, 2),
        identity_params=tuple(control.ravel().tolist()),
        grid_fn=tps_grid,
    )


_REGISTRY: dict[str, Transform] = {
    "affine": Transform("affine", (2, 3), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), affine_grid),
    "attention": Transform("attention", (3,), (1.0, 0.0, 0.0), _attention_grid),
    "projective": Transform(
        "projective", (8,), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0), projective_grid
    ),
    "tps": thin_plate_spline(4),
    "tps3x3": thin_plate_spline(3),
    "tps4x4": thin_plate_spline(4),
    "affine3d": Transform("affine3d", (3, 4), (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0,
                                              0.0, 0.0, 1.0, 0.0), affine_grid, ndim=3),
    "attention3d": Transform("attention3d", (4,), (1.0, 0.0, 0.0, 0.0), _attention_grid, ndim=3),
}

NAMES = tuple(_REGISTRY)


def names(ndim: int) -> tuple[str, ...]:
    """The registered transforms for images (``ndim`` 2) or volumes (3)."""
    return tuple(name for name, transform in _REGISTRY.items() if transform.ndim == ndim)


def get(name: str) -> Transform:
    """The transform registered under ``name`` (one of ``NAMES``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown transform {name!r}; expected one of {', '.join(NAMES)}")
    return _REGISTRY[name]


# ---------------------------------------------------------------- dense displacement fields

UNITS = ("pixels", "normalized")


def _check_field(field: jax.Array, name: str) -> int:
    """The number of spatial axes of a displacement field, or a ValueError naming the shapes."""
    if field.ndim not in (4, 5) or field.shape[-1] != field.ndim - 2:
        raise ValueError(f"{name} must be [B, H, W, 2] or [B, D, H, W, 3] (last axis u_x, u_y[, "
                         f"u_z]), got shape {field.shape}")
    return field.ndim - 2


def pixel_scale(size: tuple[int, ...], align_corners: bool) -> np.ndarray:
    """Normalised units per pixel along ``(x, y[, z])`` for a grid of ``size`` ((D,) H, W):
    ``2 / size`` (align_corners=False) or ``2 / (size - 1)`` (True; 1 for a size-1 axis)."""
    counts = np.asarray(size[::-1], np.float64)
    return 2.0 / (np.maximum(counts - 1, 1) if align_corners else counts)


def displacement_grid(
    displacement: jax.Array, *, units: str = "pixels", align_corners: bool = False
) -> jax.Array:
    """Dense sampling grid ``G + u``: the identity grid plus a displacement field.

    Args:
      displacement: ``u``, ``[B, H, W, 2]`` or ``[B, D, H, W, 3]``, last axis ``(u_x, u_y[, u_z])``
        (x along the width), defined on the output grid (which takes its size).
      units: ``"pixels"`` (default; pixels of an input of the field's size) or ``"normalized"``
        (the grid's [-1, 1] units).
      align_corners: as for ``base_grid`` and the sampler; it sets the pixel size in normalised
        units (``pixel_scale``).

    Returns:
      ``[B, *size, n]`` for ``stn.sampling.sample``: output point ``p`` samples ``p + u(p)``.
    """
    displacement = jnp.asarray(displacement)
    _check_field(displacement, "displacement")
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}, got {units!r}")
    size = displacement.shape[1:-1]
    if units == "pixels":
        scale = pixel_scale(size, align_corners).reshape((1,) * (displacement.ndim - 1) + (-1,))
        displacement = displacement * jnp.asarray(scale, displacement.dtype)
    identity = base_grid(*size, align_corners=align_corners, dtype=displacement.dtype)[None]
    return identity + displacement


def compose_displacements(
    outer: jax.Array, inner: jax.Array, *, units: str = "pixels", align_corners: bool = False
) -> jax.Array:
    """The displacement of ``p -> phi_outer(phi_inner(p))`` with ``phi(p) = p + u(p)``:

        u(p) = u_inner(p) + u_outer(p + u_inner(p)),

    ``u_outer`` read between its samples by linear interpolation, and at its nearest edge value
    beyond them (border padding). Sampling an image with ``u`` is sampling it with ``u_outer``
    and then sampling that result with ``u_inner``, as for ``compose_affine``. Both fields have
    the same shape and ``units``.
    """
    outer, inner = jnp.asarray(outer), jnp.asarray(inner)
    _check_field(outer, "outer")
    _check_field(inner, "inner")
    if outer.shape != inner.shape:
        raise ValueError(f"displacement fields must have the same shape, got outer {outer.shape} "
                         f"and inner {inner.shape}")
    grid = displacement_grid(inner, units=units, align_corners=align_corners)
    moved = sampling.sample(outer, grid, kernel="bilinear", padding="border",
                            align_corners=align_corners)
    return inner + moved


def integrate_velocity(
    velocity: jax.Array, *, steps: int = 7, units: str = "pixels", align_corners: bool = False
) -> jax.Array:
    """Scaling and squaring (Arsigny et al. 2006): the displacement of ``exp(v)``, the time-1 flow
    of the stationary velocity field ``v``:

        u_0 = v / 2^steps,    u_{k+1}(p) = u_k(p) + u_k(p + u_k(p))

    (``compose_displacements(u_k, u_k)``), so ``u_steps`` is ``2^steps`` small steps composed: a
    diffeomorphic warp for a smooth enough ``v``, as registration networks such as VoxelMorph use.
    Same shapes and units as the field.
    """
    velocity = jnp.asarray(velocity)
    _check_field(velocity, "velocity")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    displacement = velocity / (2.0 ** steps)
    for _ in range(steps):
        displacement = compose_displacements(displacement, displacement, units=units,
                                             align_corners=align_corners)
    return displacement
