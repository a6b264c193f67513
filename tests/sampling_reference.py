"""A literal float64 NumPy transcription of paper eq. 3 (the sampler's reference), and test grids.

`reference_sample` sums U_nm k(x_s - m) k(y_s - n) over every pixel, with the paddings and both
`align_corners` conventions written out; tests of every sampler path compare against it.
"""
import numpy as np

from stn import kernels


def _reference_unnormalize(coord, size, align_corners):
    if align_corners:
        return (coord + 1) / 2 * (size - 1)
    return ((coord + 1) * size - 1) / 2


def _reference_reflect(coord, low, high):
    """Mirror into [low, high] using the period 2 * (high - low)."""
    span = high - low
    if span == 0:
        return np.zeros_like(coord)
    t = np.mod(coord - low, 2 * span)
    return low + np.where(t > span, 2 * span - t, t)


def _reference_pad(coord, size, padding, align_corners):
    if padding == "border":
        return np.clip(coord, 0, size - 1)
    if padding == "reflection":
        low, high = (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)
        return np.clip(_reference_reflect(coord, low, high), 0, size - 1)
    return coord


def _reference_keys(distance, a):
    """Keys (1981) eq. 15: the cubic convolution kernel."""
    s = np.abs(distance)
    return np.where(s < 1, (a + 2) * s**3 - (a + 3) * s**2 + 1,
                    np.where(s < 2, a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a, 0.0))


def reference_kernel(distance, kernel):
    """k(d) for a kernel name or object, from its textbook formula."""
    if kernel == "bilinear" or isinstance(kernel, kernels.Linear):
        return np.maximum(0.0, 1.0 - np.abs(distance))
    if kernel == "nearest" or isinstance(kernel, kernels.Nearest):
        # Integer kernel: m == floor(x + 0.5)  <=>  -0.5 <= x - m < 0.5.
        return ((distance >= -0.5) & (distance < 0.5)).astype(np.float64)
    if kernel == "bicubic":
        return _reference_keys(distance, -0.75)
    if isinstance(kernel, kernels.Keys):
        return _reference_keys(distance, float(kernel.a))
    if isinstance(kernel, kernels.Gaussian):
        sigma = float(kernel.sigma)
        inside = (distance >= -kernel.radius) & (distance < kernel.radius)
        return np.where(inside, np.exp(-distance**2 / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi)),
                        0.0)
    raise AssertionError(kernel)


def _pads_coordinate(kernel):
    return kernel in ("nearest", "bilinear") or isinstance(kernel, (kernels.Nearest, kernels.Linear))


def _reference_axis(coord, size, kernel, padding, align_corners):
    """Kernel matrix [..., L] over a lattice of pixels and, per lattice pixel, the image index it
    reads (-1: the fill value, 0 unless padding is "fill"). The lattice spans far beyond the
    image, so the sum over it is literal."""
    if _pads_coordinate(kernel) and padding in ("border", "reflection"):
        # pad the continuous coordinate, then only image pixels count
        coord = _reference_pad(coord, size, padding, align_corners)
        lattice = np.arange(size)
        return reference_kernel(coord[..., None] - lattice, kernel), lattice
    margin = 4 * size + 8
    lattice = np.arange(-margin, size + margin)
    if padding in ("zeros", "fill"):
        source = np.where((lattice >= 0) & (lattice < size), lattice, -1)
    elif padding == "wrap":  # the image tiled: pixel m is pixel m mod size
        source = np.mod(lattice, size)
    else:  # torch's bicubic: pad each tap's (integer) coordinate, then truncate to an index
        source = _reference_pad(lattice.astype(np.float64), size, padding, align_corners)
        source = source.astype(np.int64)
    return reference_kernel(coord[..., None] - lattice, kernel), source


def reference_sample(image, grid, kernel, padding, align_corners, fill_value=0.0):
    """V_i^c = sum_l sum_n sum_m U_lnm^c k(x_s - m) k(y_s - n) (k(z_s - l)), summed literally
    over a lattice of pixels reaching far outside the image (padding gives their values; with
    "fill", ``fill_value``: a number or one per channel)."""
    image = np.asarray(image, np.float64)
    grid = np.asarray(grid, np.float64)
    num_axes = grid.shape[-1]
    sizes = image.shape[1:-1]
    per_axis = kernel if isinstance(kernel, (tuple, list)) else (kernel,) * num_axes
    matrices, sources = [], []
    for axis, size in enumerate(sizes):  # image order (z,) y, x; grid order x, y (, z)
        coord = _reference_unnormalize(grid[..., num_axes - 1 - axis], size, align_corners)
        matrix, source = _reference_axis(coord, size, per_axis[num_axes - 1 - axis], padding,
                                         align_corners)
        matrices.append(matrix)
        sources.append(source)
    reads_pixel = np.ones(tuple(len(s) for s in sources), bool)
    for axis, source in enumerate(sources):
        shape = [1] * num_axes
        shape[axis] = -1
        reads_pixel = reads_pixel & (source >= 0).reshape(shape)
    extended = image[(slice(None), *np.ix_(*[np.maximum(s, 0) for s in sources]))]
    fill = np.broadcast_to(np.asarray(fill_value if padding == "fill" else 0.0, np.float64),
                           image.shape[-1:])
    extended = np.where(reads_pixel[None, ..., None], extended, fill)
    if num_axes == 2:
        return np.einsum("bijn,bijm,bnmc->bijc", *matrices, extended)
    return np.einsum("bijkl,bijkn,bijkm,blnmc->bijkc", *matrices, extended)


def _pixel_to_normalized(pixel, size, align_corners):
    if align_corners:
        return pixel / (size - 1) * 2 - 1
    return (2 * pixel + 1) / size - 1


def _test_grid(rng, batch, sizes, align_corners):
    """Random points (some outside), corners/edges of the range, and exact pixel centres.

    ``sizes`` in image order ((D,) H, W); the grid's last axis is (x, y(, z)).
    """
    num_axes = len(sizes)
    lead = (batch, 6) + (5,) * (num_axes - 1)
    random_points = rng.uniform(-1.4, 1.4, size=lead + (num_axes,))
    edges = np.array([-1.0, 1.0, -1.0 - 1e-3, 1.0 + 1e-3, 0.0])
    edge_points = np.stack(np.meshgrid(*[edges] * num_axes, indexing="ij"), -1)
    edge_points = np.broadcast_to(edge_points, (batch,) + edge_points.shape)
    pixels = [rng.integers(-1, size + 1, size=(batch,) + (5,) * num_axes) for size in sizes[::-1]]
    integer_points = np.stack([_pixel_to_normalized(m, size, align_corners)
                               for m, size in zip(pixels, sizes[::-1])], -1)
    return np.concatenate([random_points, edge_points, integer_points], axis=1)
