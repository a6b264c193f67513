"""Sampling kernels ``k(d; Phi)`` of the spatial transformer's sampler (paper eq. 3).

The sampler computes ``V_i = sum_n sum_m U_nm k(x_s - m; Phi_x) k(y_s - n; Phi_y)`` (and a third
factor ``k(z_s - l; Phi_z)`` for volumes): a separable kernel applied along each axis. A kernel
here is a small frozen dataclass, registered as a JAX pytree whose leaves are its parameters
``Phi`` (so they can be traced, learnt and differentiated) and whose support radius is static.

Each kernel is zero outside ``[-radius, radius)`` and defines three things:

* ``kernel(d)``: the weights ``k(d; Phi)`` of signed distances ``d = x_s - m`` (elementwise).
* ``first_tap(x)``: the lowest pixel index whose weight may be non-zero, ``floor(x) - ceil(r) + 1``.
* ``num_taps``: how many consecutive pixels from there may carry weight, ``2 ceil(r)``.

Kinks (linear at 0 and +-1, the Gaussian's truncation) follow one rule: every kernel is written
piecewise on half-open intervals ``[a, b)``, so autodiff takes the derivative of the piece on the
right of a kink. As ``x_s`` grows, ``d = x_s - m`` grows too, so this is the one-sided derivative
of the interpolation as the source point moves towards higher indices: ``U_{m+1} - U_m`` for the
linear kernel at an integer ``x_s`` (torch and ``jax.scipy.ndimage.map_coordinates`` agree).

Padding: the nearest and linear kernels act on the padded continuous coordinate (torch's
``grid_sample`` for ``nearest`` and ``bilinear``); every wider kernel pads each tap's integer index
instead (torch's ``bicubic``: a tap outside the image reads zero, the edge pixel or the mirrored
pixel). ``pads_coordinate`` says which.

Names (``get``): ``"nearest"``, ``"bilinear"`` (linear, trilinear on volumes as in torch) and
``"bicubic"`` (Keys with ``a = -0.75``, torch's ``mode="bicubic"``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Kernel", "Nearest", "Linear", "Keys", "Gaussian", "Stretched", "get", "NAMES"]


class Kernel:
    """Base class of the separable sampling kernels ``k(d; Phi)``, zero outside [-r, r)."""

    radius: float
    pads_coordinate: ClassVar[bool] = False

    @property
    def num_taps(self) -> int:
        """Consecutive pixels per axis that may carry weight: ``2 ceil(radius)``."""
        return 2 * math.ceil(self.radius)

    def first_tap(self, coordinate: jax.Array) -> jax.Array:
        """Lowest index ``m`` (a float) with ``x - m < radius``: ``floor(x) - ceil(r) + 1``."""
        return jnp.floor(coordinate) - (math.ceil(self.radius) - 1)

    def __call__(self, distance: jax.Array) -> jax.Array:
        """The weights ``k(d; Phi)`` of signed distances ``d = x_s - m``."""
        raise NotImplementedError

    def tap_weights(self, coordinate: jax.Array, first: jax.Array) -> jax.Array:
        """``[..., num_taps]`` weights ``k(x - m)`` of the taps ``m = first, first + 1, ...``."""
        offsets = jnp.arange(self.num_taps, dtype=coordinate.dtype)
        offsets = offsets.reshape((1,) * coordinate.ndim + (self.num_taps,))
        return self((coordinate - first)[..., None] - offsets)

    def params(self) -> dict[str, Any]:
        """The differentiable parameters ``Phi`` by name (empty for nearest and linear)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not f.metadata.get("static")}


def _register(cls):
    """Registers a kernel dataclass as a pytree: ``Phi`` are leaves, static fields metadata.

    Unflattening sets the fields without calling the constructor: JAX rebuilds pytrees with
    leaves that are not numbers (``None``, sentinels, symbolic zeros), which the constructor's
    checks (``_check_number``) rightly refuse from a user.
    """
    fields = dataclasses.fields(cls)
    data = tuple(f.name for f in fields if not f.metadata.get("static"))
    meta = tuple(f.name for f in fields if f.metadata.get("static"))

    def flatten_with_keys(kernel):
        children = [(jax.tree_util.GetAttrKey(name), getattr(kernel, name)) for name in data]
        return children, tuple(getattr(kernel, name) for name in meta)

    def flatten(kernel):
        return [getattr(kernel, name) for name in data], tuple(getattr(kernel, name)
                                                                for name in meta)

    def unflatten(static, children):
        kernel = object.__new__(cls)
        for name, value in zip(meta + data, tuple(static) + tuple(children)):
            object.__setattr__(kernel, name, value)  # frozen dataclass
        return kernel

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


def _check_number(value: Any, what: str, *, scalar: bool = True, positive: bool = False,
                  at_least: float | None = None) -> None:
    """A one-line ValueError unless ``value`` is a real number: a Python or NumPy int or float,
    or an integer or floating array (a scalar if ``scalar``), traced or not. Bools, strings and
    complex values are refused; a concrete value must be finite, and ``> 0`` with ``positive``
    or ``>= at_least``. A traced value (under ``jit``, ``grad``) is checked by dtype and shape."""
    dtype = getattr(value, "dtype", None)  # arrays, NumPy scalars and tracers have one
    if dtype is None:
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    else:
        real = jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)
    if not real or (scalar and jnp.ndim(value) != 0):
        kind = "a real number (a scalar)" if scalar else "a real number or array"
        raise ValueError(f"{what} must be {kind}, got {value!r}")
    if isinstance(value, jax.core.Tracer):
        return
    concrete = np.asarray(value, np.float64)
    bad = ~np.isfinite(concrete)
    if positive:
        bad |= ~(concrete > 0)
    if at_least is not None:
        bad |= ~(concrete >= at_least)
    if np.any(bad):
        bound = " > 0" if positive else f" >= {at_least}" if at_least is not None else ""
        raise ValueError(f"{what} must be a finite number{bound}, got {value!r}")


def _inside(distance: jax.Array, radius: float) -> jax.Array:
    """``-radius <= d < radius``: the half-open support every kernel shares."""
    return (distance >= -radius) & (distance < radius)


def _magnitude(distance: jax.Array) -> jax.Array:
    """``|d|`` written as two pieces, ``[0, inf)`` and ``(-inf, 0)``, for the one-sided rule."""
    return jnp.where(distance < 0, -distance, distance)


@_register
@dataclasses.dataclass(frozen=True)
class Nearest(Kernel):
    """The integer kernel (paper eq. 4): the one pixel ``floor(x_s + 0.5)``, weight 1.

    ``k(d) = 1`` for ``-0.5 <= d < 0.5``. Its weight is constant, so it passes no gradient to the
    grid. torch rounds half to even instead, which differs only at exact half-pixel points.
    """

    radius: ClassVar[float] = 0.5
    pads_coordinate: ClassVar[bool] = True

    @property
    def num_taps(self) -> int:
        return 1

    def first_tap(self, coordinate: jax.Array) -> jax.Array:
        return jnp.floor(coordinate + 0.5)

    def __call__(self, distance: jax.Array) -> jax.Array:
        return _inside(distance, self.radius).astype(distance.dtype)

    def tap_weights(self, coordinate: jax.Array, first: jax.Array) -> jax.Array:
        # Always 1: x - floor(x + 0.5) can round to exactly -0.5 - ulp, just outside the support.
        return jnp.ones(coordinate.shape + (1,), coordinate.dtype)


@_register
@dataclasses.dataclass(frozen=True)
class Linear(Kernel):
    """Paper eq. 5: ``k(d) = max(0, 1 - |d|)`` (bilinear in 2-D, trilinear in 3-D).

    Written as ``1 + d`` on [-1, 0) and ``1 - d`` on [0, 1), so the derivative at the kinks is the
    one on their right.
    """

    radius: ClassVar[float] = 1.0
    pads_coordinate: ClassVar[bool] = True

    def __call__(self, distance: jax.Array) -> jax.Array:
        weight = jnp.where(distance < 0, 1.0 + distance, 1.0 - distance)
        return jnp.where(_inside(distance, self.radius), weight, jnp.zeros_like(weight))


@_register
@dataclasses.dataclass(frozen=True)
class Keys(Kernel):
    """Keys' cubic convolution kernel (Keys 1981, eq. 15) with free parameter ``a``.

    With ``s = |d|``:

        k(d) = (a + 2) s^3 - (a + 3) s^2 + 1           for 0 <= s < 1
        k(d) = a s^3 - 5 a s^2 + 8 a s - 4 a            for 1 <= s < 2
        k(d) = 0                                        otherwise.

    It interpolates (``k(0) = 1``, ``k(+-1) = k(+-2) = 0``) and its weights sum to one for every
    ``a``. ``a = -0.75`` is torch's and OpenCV's ``bicubic`` (the default here); Keys' own choice
    is ``a = -0.5`` (third-order accurate). ``a`` is differentiable (a scalar).
    """

    a: Any = -0.75
    radius: ClassVar[float] = 2.0

    def __post_init__(self):
        _check_number(self.a, "Keys a")

    def __call__(self, distance: jax.Array) -> jax.Array:
        a = jnp.asarray(self.a, distance.dtype)
        s = _magnitude(distance)
        # The nesting of torch's cubic_convolution1/2 (same float32 rounding as its grid_sample).
        near = ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0
        far = ((a * s - 5.0 * a) * s + 8.0 * a) * s - 4.0 * a
        weight = jnp.where(s < 1.0, near, far)
        return jnp.where(_inside(distance, self.radius), weight, jnp.zeros_like(weight))


@_register
@dataclasses.dataclass(frozen=True)
class Gaussian(Kernel):
    """A Gaussian of width ``sigma`` truncated to ``[-radius, radius)``:

        k(d) = exp(-d^2 / (2 sigma^2)) / (sigma sqrt(2 pi)).

    Not an interpolating kernel: it blurs (anti-aliasing before down-sampling, or a learnt
    smoothing). Its weights over the integer taps sum to about one when ``sigma >= 0.5`` and
    ``radius >= 3 sigma`` (the lattice sum of a unit Gaussian is ``1 + 2 exp(-2 pi^2 sigma^2)``
    at worst, 1.4% for ``sigma = 0.5``); they are not renormalised. ``sigma`` is differentiable
    (a scalar); ``radius`` is static and sets the taps per axis, ``2 ceil(radius)``.
    """

    sigma: Any = 0.5
    radius: float = dataclasses.field(default=1.5, metadata={"static": True})

    def __post_init__(self):
        _check_number(self.radius, "Gaussian radius", positive=True)
        if isinstance(self.radius, jax.core.Tracer):
            raise ValueError("Gaussian radius is static (it sets the taps): a Python number, "
                             "not a traced value")
        _check_number(self.sigma, "Gaussian sigma", positive=True)

    def __call__(self, distance: jax.Array) -> jax.Array:
        sigma = jnp.asarray(self.sigma, distance.dtype)
        weight = jnp.exp(-0.5 * jnp.square(distance / sigma)) / (sigma * math.sqrt(2.0 * math.pi))
        return jnp.where(_inside(distance, self.radius), weight, jnp.zeros_like(weight))


@_register
@dataclasses.dataclass(frozen=True)
class Stretched(Kernel):
    """``base`` stretched per point by ``scale >= 1`` and normalised: the antialiasing kernel.

    A kernel stretched by ``s`` is ``k(d / s) / s``, its support widened to ``[-r s, r s)``; over
    the integer taps its weights are divided by their sum (the ``1 / s`` cancels), so that a
    constant image samples to the same constant whatever ``s`` (the lattice sum of a stretched
    kernel ripples with the point's phase: linear at ``s = 1.5`` sums to 1.11 or 0.89):

        w_t = k((x - m_t) / s; Phi) / sum_u k((x - m_u) / s; Phi).

    ``scale`` is an array broadcast over the points (``[B, *out]``, one per output point) and a
    pytree leaf, so gradients reach it (and through it the grid that set it); ``max_scale`` is
    static and sets the taps, ``2 ceil(r max_scale)``, so ``scale`` must not exceed it.
    """

    base: Kernel
    scale: Any
    max_scale: float = dataclasses.field(default=1.0, metadata={"static": True})

    def __post_init__(self):
        if not isinstance(self.base, Kernel):
            raise ValueError(f"Stretched base must be a stn.kernels.Kernel, got {self.base!r}")
        _check_number(self.max_scale, "Stretched max_scale", at_least=1.0)
        _check_number(self.scale, "Stretched scale", scalar=False, positive=True)

    @property
    def radius(self) -> float:
        return self.base.radius * self.max_scale

    def __call__(self, distance: jax.Array) -> jax.Array:
        scale = jnp.asarray(self.scale, distance.dtype)
        return self.base(distance / scale) / scale

    def tap_weights(self, coordinate: jax.Array, first: jax.Array) -> jax.Array:
        offsets = jnp.arange(self.num_taps, dtype=coordinate.dtype)
        offsets = offsets.reshape((1,) * coordinate.ndim + (self.num_taps,))
        distance = (coordinate - first)[..., None] - offsets
        weights = self.base(distance / jnp.asarray(self.scale, coordinate.dtype)[..., None])
        return weights / jnp.sum(weights, axis=-1, keepdims=True)


_NAMED: dict[str, Kernel] = {"nearest": Nearest(), "bilinear": Linear(), "bicubic": Keys(-0.75)}
NAMES = tuple(_NAMED)


def get(kernel: str | Kernel) -> Kernel:
    """The kernel named ``kernel`` (one of ``NAMES``), or ``kernel`` itself if it is a Kernel."""
    if isinstance(kernel, Kernel):
        return kernel
    if isinstance(kernel, str) and kernel in _NAMED:
        return _NAMED[kernel]
    raise ValueError(f"kernel must be one of {NAMES} or a stn.kernels.Kernel, got {kernel!r}")
