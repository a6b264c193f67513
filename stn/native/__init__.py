"""The native CPU sampler: ``sampler.cc`` called from JAX through the XLA FFI.

It computes the same thing as the pure-jnp sampler of ``stn.sampling`` (paper eqs. 3-7: values,
image and grid derivatives, the rule for non-finite and huge points) for the nearest and linear
kernels in 2-D and 3-D, every padding and both ``align_corners``, in float32 or float64, with a
hand-written loop instead of XLA's gathers and serial scatter. ``stn.sampling.sample`` picks it
on the CPU backend (``method="auto"``); ``stn.sampling`` stays the reference and the path for
every other kernel, dtype and backend.

Three JAX primitives, each lowered to an FFI custom call on the CPU:

* ``sample``: ``V = S(U; x)`` (paper eq. 3);
* ``tangent``: ``dV = S(dU; x) + sum_a (dV/dx_a) dx_a``, linear in ``(dU, dx)``: the JVP of
  ``sample``, so forward mode (``jax.jvp``, ``check_grads``) works;
* ``cotangent``: its transpose, ``(dL/dU, dL/dx)`` from ``dL/dV`` in one pass (paper eqs. 6-7),
  which is what reverse mode (``jax.grad``, ``jax.vjp``) runs.

(``jax.custom_vjp`` around ``jax.ffi.ffi_call`` would lose forward mode, which the library
supports; a linear primitive with a transpose rule keeps both.) ``vmap`` folds the mapped axis
into the batch (the kernel treats every axis before the spatial ones as batch); under ``jit``
with sharded inputs XLA gathers the custom call's operands, so the result is the same as on
one device.

Derivatives of every order: ``tangent`` and ``cotangent`` are each other's transposes, and their
own JVPs are the native primitives in their linear operands and the pure-jnp sampler's second
derivatives in the image and the grid (the same map, so the same numbers to float32 rounding):
``jax.hessian``, ``jax.jacfwd(jax.grad(f))`` and reverse over reverse all run, the second and
higher orders in the image and grid at the jnp path's speed.

Availability: ``STN_NATIVE=0`` turns the native path off (a value other than 0/1, true/false,
on/off, yes/no is refused); otherwise the library is built on first use (``stn.native.build``,
one line when the build starts and one when it is done) and, where that fails (no compiler, or a
damaged cached library that cannot be rebuilt), ``available()`` is False and one warning line
says so. ``STN_NATIVE_THREADS=n`` caps the threads (default: XLA's CPU
thread pool); results are bit-identical for every value.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from stn.native import build as build_lib

logger = logging.getLogger("stn.native")

KERNEL_CODES = {"nearest": 0, "linear": 1}
PADDING_CODES = {"zeros": 0, "border": 1, "reflection": 2}
DTYPES = (jnp.float32, jnp.float64)
_TARGETS = {"forward": ("stn_sample_forward", "StnSampleForward"),
            "tangent": ("stn_sample_tangent", "StnSampleTangent"),
            "backward": ("stn_sample_backward", "StnSampleBackward")}

_state: dict = {}  # "loaded": bool, "reason": why not, "path": the library


_SWITCH = {"1": False, "true": False, "on": False, "yes": False, "": False,
           "0": True, "false": True, "off": True, "no": True}


def disabled_by_env() -> bool:
    """Whether ``STN_NATIVE`` is 0/false/off/no (CI runs the tests both ways); unset, empty or
    1/true/on/yes leave it on, and anything else is a one-line ValueError."""
    value = os.environ.get("STN_NATIVE", "1")
    if value.strip().lower() not in _SWITCH:
        raise ValueError(f"STN_NATIVE must be 1/true/on/yes or 0/false/off/no, got {value!r}")
    return _SWITCH[value.strip().lower()]


def _register(path) -> None:
    """Loads the library and registers its three handlers as CPU FFI targets."""
    library = ctypes.cdll.LoadLibrary(str(path))
    for target, symbol in _TARGETS.values():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")
    _state["library"] = library  # keep it loaded


def load() -> bool:
    """Builds (if needed) and registers the library once per process; whether it is usable.

    A failure is reported by ONE warning line and remembered; the pure-jnp sampler runs instead.
    """
    if "loaded" not in _state:
        try:
            path = build_lib.build()
            _register(path)
            _state.update(loaded=True, path=path)
        except (build_lib.BuildError, OSError, AttributeError) as error:
            _state.update(loaded=False, reason=str(error))
            logger.warning("stn: native CPU sampler unavailable (%s); using the pure-jnp "
                           "sampler", error)
    return _state["loaded"]


def available() -> bool:
    """Whether the native sampler can run here: not disabled, built and loaded, CPU backend."""
    return not disabled_by_env() and jax.default_backend() == "cpu" and load()


def unavailable_reason() -> str | None:
    """Why ``available()`` is False (None when it is True)."""
    if disabled_by_env():
        return "disabled by STN_NATIVE=0"
    if jax.default_backend() != "cpu":
        return f"the default backend is {jax.default_backend()}, not cpu"
    if not load():
        return _state["reason"]
    return None


def max_threads() -> int:
    """``STN_NATIVE_THREADS`` (0 = the size of XLA's CPU thread pool)."""
    value = os.environ.get("STN_NATIVE_THREADS", "0")
    try:
        return max(0, int(value))
    except ValueError:
        raise ValueError(f"STN_NATIVE_THREADS must be an integer, got {value!r}") from None


# ---------------------------------------------------------------- primitives

_sample_p = Primitive("stn_native_sample")
_tangent_p = Primitive("stn_native_sample_tangent")
_cotangent_p = Primitive("stn_native_sample_cotangent")
_cotangent_p.multiple_results = True


def _output_aval(image, grid):
    return jax.core.ShapedArray(grid.shape[:-1] + image.shape[-1:], image.dtype)


_sample_p.def_abstract_eval(lambda image, grid, **_: _output_aval(image, grid))
_tangent_p.def_abstract_eval(lambda image, grid, d_image, d_grid, **_: _output_aval(image, grid))
_cotangent_p.def_abstract_eval(lambda image, grid, ct, **_: (
    jax.core.ShapedArray(image.shape, image.dtype), jax.core.ShapedArray(grid.shape, grid.dtype)))


def _eager(primitive):
    """Eager calls compile a one-primitive program (cached per attribute set)."""

    @functools.lru_cache(maxsize=None)
    def compiled(**params):
        return jax.jit(functools.partial(primitive.bind, **params))

    return lambda *args, **params: compiled(**params)(*args)


for _primitive in (_sample_p, _tangent_p, _cotangent_p):
    _primitive.def_impl(_eager(_primitive))


def _sample_jvp(primals, tangents, **params):
    """``(S(U; x), S(dU; x) + sum_a dV/dx_a dx_a)``: the tangent is its own linear primitive."""
    image, grid = primals
    d_image, d_grid = (ad.instantiate_zeros(t) for t in tangents)
    return (_sample_p.bind(image, grid, **params),
            _tangent_p.bind(image, grid, d_image, d_grid, **params))


def _tangent_transpose(ct, image, grid, d_image, d_grid, **params):
    """The transpose of the tangent map in ``(dU, dx)``: the one-pass backward (eqs. 6-7)."""
    if ad.is_undefined_primal(image) or ad.is_undefined_primal(grid):
        raise NotImplementedError("the native sampler's tangent is linear only in (dU, dx)")
    ct = ad.instantiate_zeros(ct)
    d_u, d_x = _cotangent_p.bind(image, grid, ct, **params)
    return (None, None, d_u if ad.is_undefined_primal(d_image) else None,
            d_x if ad.is_undefined_primal(d_grid) else None)


def _cotangent_transpose(cts, image, grid, ct, **params):
    """The transpose of the cotangent map in ``ct``: the tangent map (the two are each other's
    transposes), which reverse-over-reverse differentiation runs."""
    if ad.is_undefined_primal(image) or ad.is_undefined_primal(grid):
        raise NotImplementedError("the native sampler's cotangent is linear only in ct")
    d_image, d_grid = (ad.instantiate_zeros(c) for c in cts)
    return None, None, _tangent_p.bind(image, grid, d_image, d_grid, **params)


ad.primitive_jvps[_sample_p] = _sample_jvp
ad.primitive_transposes[_tangent_p] = _tangent_transpose
ad.primitive_transposes[_cotangent_p] = _cotangent_transpose


# ---------------------------------------------------------------- derivatives beyond the first
#
# ``tangent`` and ``cotangent`` are linear in their last operands (``(dU, dx)``, ``ct``), and
# those parts of their derivatives are the native primitives themselves. Their derivatives in the
# image and the grid (second derivatives of the sampler: d^2 V / dx_a dx_b, d^2 V / dU dx) are
# taken through the pure-jnp sampler of ``stn.sampling``, which computes the same map: the same
# numbers to float32 rounding, and every further order, at the jnp path's speed.

_JNP_KERNELS = {code: "bilinear" if name == "linear" else name
                for name, code in KERNEL_CODES.items()}
_PADDINGS = {code: name for name, code in PADDING_CODES.items()}


def _reference_sample(params: dict):
    """``(image, grid) -> V`` by the pure-jnp sampler, on this module's operands (already in the
    compute dtype; every axis before the spatial ones is a batch axis, as in the kernel)."""
    from stn import sampling  # here, not at the top: stn.sampling imports this module

    options = dict(kernel=_JNP_KERNELS[int(params["kernel"])],
                   padding=_PADDINGS[int(params["padding"])],
                   align_corners=bool(params["align_corners"]), method="jnp")

    def sample_(image, grid):
        n = grid.shape[-1]
        out = sampling._sample(image.reshape(-1, *image.shape[-n - 1:]),
                               grid.reshape(-1, *grid.shape[-n - 1:]), **options)
        return out.reshape(*grid.shape[:-1], image.shape[-1])

    return sample_


def _is_zero(tangent) -> bool:
    return type(tangent) is ad.Zero


def _tangent_jvp(primals, tangents, **params):
    """JVP of ``tangent(U, x, dU, dx)``: native in ``(dU, dx)`` (it is linear there), through the
    jnp sampler's second derivatives in ``(U, x)``."""
    image, grid, d_image, d_grid = primals
    t_image, t_grid, t_d_image, t_d_grid = tangents
    terms = []
    if not (_is_zero(t_d_image) and _is_zero(t_d_grid)):
        terms.append(_tangent_p.bind(image, grid, ad.instantiate_zeros(t_d_image),
                                     ad.instantiate_zeros(t_d_grid), **params))
    if not (_is_zero(t_image) and _is_zero(t_grid)):
        reference = _reference_sample(params)
        tangent_at = lambda u, x: jax.jvp(reference, (u, x), (d_image, d_grid))[1]  # noqa: E731
        terms.append(jax.jvp(tangent_at, (image, grid), (ad.instantiate_zeros(t_image),
                                                         ad.instantiate_zeros(t_grid)))[1])
    out = _tangent_p.bind(*primals, **params)
    return out, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(out)


def _cotangent_jvp(primals, tangents, **params):
    """JVP of ``cotangent(U, x, ct)``: native in ``ct`` (it is linear there), through the jnp
    sampler's second derivatives in ``(U, x)``."""
    image, grid, ct = primals
    t_image, t_grid, t_ct = tangents
    terms = []
    if not _is_zero(t_ct):
        terms.append(_cotangent_p.bind(image, grid, t_ct, **params))
    if not (_is_zero(t_image) and _is_zero(t_grid)):
        reference = _reference_sample(params)
        cotangent_at = lambda u, x: jax.vjp(reference, u, x)[1](ct)  # noqa: E731
        terms.append(jax.jvp(cotangent_at, (image, grid), (ad.instantiate_zeros(t_image),
                                                           ad.instantiate_zeros(t_grid)))[1])
    out = _cotangent_p.bind(*primals, **params)
    if not terms:
        return out, [jnp.zeros_like(o) for o in out]
    return out, [sum(parts[1:], parts[0]) for parts in zip(*terms)]


ad.primitive_jvps[_tangent_p] = _tangent_jvp
ad.primitive_jvps[_cotangent_p] = _cotangent_jvp


def _batch_rule(primitive):
    """vmap: the mapped axis moves to the front of every operand (broadcast where unmapped);
    the kernel folds it into the batch."""

    def rule(args, dims, **params):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        moved = [jnp.broadcast_to(a, (size, *a.shape)) if d is None else jnp.moveaxis(a, d, 0)
                 for a, d in zip(args, dims)]
        out = primitive.bind(*moved, **params)
        if primitive.multiple_results:
            return out, [0] * len(out)
        return out, 0

    return rule


for _primitive in (_sample_p, _tangent_p, _cotangent_p):
    batching.primitive_batchers[_primitive] = _batch_rule(_primitive)

mlir.register_lowering(_sample_p, jax.ffi.ffi_lowering(_TARGETS["forward"][0]), platform="cpu")
mlir.register_lowering(_tangent_p, jax.ffi.ffi_lowering(_TARGETS["tangent"][0]), platform="cpu")
mlir.register_lowering(_cotangent_p, jax.ffi.ffi_lowering(_TARGETS["backward"][0]),
                       platform="cpu")


# ---------------------------------------------------------------- entry point


def supports(image_dtype, grid_dtype, kernel: str, num_axes: int) -> bool:
    """Whether the native kernel computes this case: ``kernel`` "nearest" or "linear" on every
    axis, 2-D or 3-D, a floating image, and a compute dtype (image, grid and float32 promoted)
    of float32 or float64."""
    compute = jnp.promote_types(jnp.promote_types(image_dtype, grid_dtype), jnp.float32)
    return (num_axes in (2, 3) and kernel in KERNEL_CODES
            and jnp.issubdtype(image_dtype, jnp.floating) and compute in DTYPES)


def sample(image: jax.Array, grid: jax.Array, *, kernel: str, padding: str,
           align_corners: bool) -> jax.Array:
    """Paper eq. 3 by the native kernel: ``image [B, *S, C]``, ``grid [B, *out, n]`` (x, y[, z]).

    ``kernel`` is ``"nearest"`` or ``"linear"`` (bilinear/trilinear). Image and grid are computed
    in their promoted dtype (float32 or float64; the caller casts the result to the image's);
    non-finite points give 0 and no gradient, huge ones are clamped (stn.sampling's rule).
    Call only where ``available()`` and ``supports(...)`` hold.
    """
    if not load():
        raise RuntimeError(f"the native sampler is unavailable: {_state['reason']}")
    compute = jnp.promote_types(jnp.promote_types(image.dtype, grid.dtype), jnp.float32)
    params = dict(kernel=np.int64(KERNEL_CODES[kernel]), padding=np.int64(PADDING_CODES[padding]),
                  align_corners=bool(align_corners), max_threads=np.int64(max_threads()))
    return _sample_p.bind(image.astype(compute), grid.astype(compute), **params)
