// Native CPU sampler of the spatial transformer (Jaderberg et al. 2015, eqs. 3-7), for XLA's FFI.
//
// Forward:  V_i^c = sum_taps U[tap]^c prod_a k(x_a - m_a)           (paper eq. 3, 2-D or 3-D)
// Backward: dL/dU[tap]^c += prod_a k(x_a - m_a) ct_i^c              (paper eq. 6)
//           dL/dx_a       = sum_taps sum_c ct_i^c U[tap]^c k'(x_a - m_a) prod_{b != a} k(...)
//                                                                    (paper eq. 7)
// for the linear kernel (bilinear / trilinear, eq. 5) and the nearest kernel (eq. 4, floor(x + 1/2),
// no grid gradient), every padding (zeros, border, reflection, applied to the continuous
// coordinate as torch's grid_sample does) and both align_corners. The rules are exactly those of
// the pure-jnp sampler in stn/sampling.py, which stays the reference:
//
// * a point with a NaN or infinite coordinate samples 0 and passes no gradient (a per-point branch);
// * a finite point is placed in pixel units and clamped to +-2^22 pixels (gradient 1/2 at the
//   bound as jnp.clip's, 0 beyond);
// * at the linear kernel's kinks the derivative is the one on the right (U_{m+1} - U_m);
// * taps outside the image are skipped, never multiplied by a zero mask.
//
// Layouts are channels last: image [B, (D,) H, W, C], grid [B, *out, n] with the last axis
// (x, y[, z]), output [B, *out, C]. Any leading axes before the spatial ones are folded into B (that
// is how vmap reaches the kernel). Work runs on XLA's intra-op thread pool: the forward and the
// grid cotangent are per point, and each batch slice's image cotangent belongs to one task, so no
// atomics are needed and the results are bit-identical whatever the number of threads.
//
// Types: float and double (templates). Other float types are cast by the Python wrapper.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr double kCoordinateBound = 4194304.0;  // 2^22, stn.sampling.COORDINATE_BOUND

enum KernelKind : int64_t { kNearest = 0, kLinear = 1 };
enum PaddingKind : int64_t { kZeros = 0, kBorder = 1, kReflection = 2 };

struct Options {
  int64_t kernel;
  int64_t padding;
  bool align_corners;
};

// ------------------------------------------------------------------ one axis's coordinate

// clip_coordinates of stn.sampling: [0, size - 1], gradient only strictly inside.
template <typename T>
inline void ClipCoordinate(int64_t size, T* c, T* d) {
  const T upper = T(size - 1);
  if (*c > T(0) && *c < upper) return;
  *c = *c <= T(0) ? T(0) : upper;
  *d = T(0);
}

// reflect_coordinates of stn.sampling: mirrors into [low, high] (|.|' = 1 at 0, as jnp.abs's).
template <typename T>
inline void ReflectCoordinate(T low, T high, T* c, T* d) {
  const T span = high - low;
  if (span <= T(0)) {
    *c = T(0);
    *d = T(0);
    return;
  }
  const T offset = *c - low;
  const T distance = offset < T(0) ? -offset : offset;
  const T d_distance = offset < T(0) ? -*d : *d;
  const T flips = std::floor(distance / span);
  const T extra = distance - flips * span;
  const bool even = std::fmod(flips, T(2)) == T(0);
  *c = even ? low + extra : high - extra;
  *d = even ? d_distance : -d_distance;
}

// The padded pixel coordinate of normalised coordinate g along an axis of `size` pixels, and its
// derivative in g (unnormalize, clamp to the bound, apply_padding of stn.sampling).
template <typename T>
inline void PixelCoordinate(T g, int64_t size, const Options& o, T* c_out, T* d_out) {
  T c, d;
  if (o.align_corners) {
    c = (g + T(1)) * T(0.5) * T(size - 1);
    d = T(0.5) * T(size - 1);
  } else {
    c = ((g + T(1)) * T(size) - T(1)) * T(0.5);
    d = T(size) * T(0.5);
  }
  const T bound = T(kCoordinateBound);
  if (c > bound || c < -bound) {
    c = c > T(0) ? bound : -bound;
    d = T(0);
  } else if (c == bound || c == -bound) {
    d = d * T(0.5);
  }
  if (o.padding == kBorder) {
    ClipCoordinate(size, &c, &d);
  } else if (o.padding == kReflection) {
    if (o.align_corners) {
      ReflectCoordinate(T(0), T(size - 1), &c, &d);
    } else {
      ReflectCoordinate(T(-0.5), T(size) - T(0.5), &c, &d);
    }
    ClipCoordinate(size, &c, &d);
  }
  *c_out = c;
  *d_out = d;
}

// ------------------------------------------------------------------ one point's taps

struct Geometry {
  int num_axes;            // N
  int64_t sizes[3];        // image spatial sizes in image order ((D,) H, W)
  int64_t strides[3];      // element strides of those axes in a batch slice
  int64_t channels;
  int64_t points;          // output points per batch slice
  int64_t image_slice;     // elements of one batch slice of the image
};

// The 2^N taps of one point (linear kernel; the nearest kernel uses tap 0 only). Tap t's bit
// (N - 1 - i) says whether image axis i (0 = outermost) takes first_i or first_i + 1. A tap outside
// the image is never read or written: its `read` points at a zero row and its `write` at a scratch
// row, so the channel loops need no branch.
template <typename T, int N>
struct Point {
  static constexpr int kTaps = 1 << N;
  const T* read[kTaps];
  T* write[kTaps];
  bool inside[kTaps];
  T weight[kTaps];  // prod_i k_i: (1 - f_i) or f_i
  T frac[N];        // f_i = x_i - floor(x_i), image axis order
  T d_coord[N];     // d(padded pixel coordinate)/d(grid coordinate), image axis order
};

// Fills `point` for the grid point g (grid order x, y[, z]); false when a coordinate is not
// finite (the point samples 0 and passes no gradient). `image` and `d_image` are the batch
// slice's (d_image may be null); `zeros` / `scratch` are C-element rows.
template <typename T, int N>
inline bool MakePoint(const T* g, const Geometry& geo, const Options& o, const T* image,
                      T* d_image, const T* zeros, T* scratch, Point<T, N>* point) {
  for (int a = 0; a < N; ++a) {
    if (!std::isfinite(g[a])) return false;
  }
  int64_t first[N];
  for (int i = 0; i < N; ++i) {
    T c, d;
    PixelCoordinate(g[N - 1 - i], geo.sizes[i], o, &c, &d);  // image axis i is grid axis N-1-i
    point->d_coord[i] = d;
    const T lower = o.kernel == kNearest ? std::floor(c + T(0.5)) : std::floor(c);
    first[i] = static_cast<int64_t>(lower);
    point->frac[i] = o.kernel == kNearest ? T(0) : c - lower;
  }
  const int taps = o.kernel == kNearest ? 1 : (1 << N);
  for (int t = 0; t < taps; ++t) {
    bool inside = true;
    int64_t offset = 0;
    T weight = T(1);
    for (int i = 0; i < N; ++i) {
      const int bit = (t >> (N - 1 - i)) & 1;
      const int64_t index = first[i] + bit;
      inside = inside && index >= 0 && index < geo.sizes[i];
      offset += index * geo.strides[i];
      weight *= bit ? point->frac[i] : T(1) - point->frac[i];
    }
    point->inside[t] = inside;
    point->weight[t] = weight;
    point->read[t] = inside ? image + offset : zeros;
    point->write[t] = inside && d_image ? d_image + offset : scratch;
  }
  return true;
}

// Linear interpolation in lerp form, innermost axis (x) first, as stn.sampling's bilinear path:
// a0 + f (a1 - a0). A constant image gives back its value exactly and zero slopes.
template <typename T>
inline T Lerp(T a0, T a1, T f) {
  return a0 + f * (a1 - a0);
}

// The value at one channel from the 2^N tap values a[t].
template <typename T, int N>
inline T LinearValue(const T* a, const T* f) {
  if constexpr (N == 2) {
    return Lerp(Lerp(a[0], a[1], f[1]), Lerp(a[2], a[3], f[1]), f[0]);
  } else {
    const T s0 = Lerp(Lerp(a[0], a[1], f[2]), Lerp(a[2], a[3], f[2]), f[1]);
    const T s1 = Lerp(Lerp(a[4], a[5], f[2]), Lerp(a[6], a[7], f[2]), f[1]);
    return Lerp(s0, s1, f[0]);
  }
}

// dV/dx_i at one channel for each image axis i (paper eq. 7): the interpolation with axis i's
// lerp replaced by the one-sided difference a1 - a0 (the derivative on the right of a kink).
template <typename T, int N>
inline void LinearSlopes(const T* a, const T* f, T* slope) {
  if constexpr (N == 2) {
    slope[1] = Lerp(a[1] - a[0], a[3] - a[2], f[0]);
    slope[0] = Lerp(a[2] - a[0], a[3] - a[1], f[1]);
  } else {
    T along_x[4], diff_x[4];
    for (int zy = 0; zy < 4; ++zy) {
      along_x[zy] = Lerp(a[2 * zy], a[2 * zy + 1], f[2]);
      diff_x[zy] = a[2 * zy + 1] - a[2 * zy];
    }
    const T along_y0 = Lerp(along_x[0], along_x[1], f[1]);
    const T along_y1 = Lerp(along_x[2], along_x[3], f[1]);
    slope[0] = along_y1 - along_y0;
    slope[1] = Lerp(along_x[1] - along_x[0], along_x[3] - along_x[2], f[0]);
    slope[2] = Lerp(Lerp(diff_x[0], diff_x[1], f[1]), Lerp(diff_x[2], diff_x[3], f[1]), f[0]);
  }
}

// ------------------------------------------------------------------ the loops

// Per-task rows of zeros (read by taps outside the image) and scratch (written by them).
template <typename T>
struct Rows {
  explicit Rows(int64_t channels) : zeros(channels, T(0)), scratch(channels, T(0)) {}
  std::vector<T> zeros, scratch;
};

template <typename T, int N>
void ForwardRange(const T* image, const T* grid, T* out, const Geometry& geo, const Options& o,
                  int64_t begin, int64_t end) {
  const int64_t C = geo.channels;
  constexpr int kTaps = 1 << N;
  Rows<T> rows(C);
  Point<T, N> pt;
  for (int64_t p = begin; p < end; ++p) {
    const T* img = image + (p / geo.points) * geo.image_slice;
    T* v = out + p * C;
    if (!MakePoint<T, N>(grid + p * N, geo, o, img, nullptr, rows.zeros.data(),
                         rows.scratch.data(), &pt)) {
      std::fill(v, v + C, T(0));
    } else if (o.kernel == kNearest) {
      std::copy(pt.read[0], pt.read[0] + C, v);
    } else {
      T a[kTaps];
      for (int64_t c = 0; c < C; ++c) {
        for (int t = 0; t < kTaps; ++t) a[t] = pt.read[t][c];
        v[c] = LinearValue<T, N>(a, pt.frac);
      }
    }
  }
}

// Forward mode: dV = sum_t w_t dU[t] + sum_i (dV/dx_i) dx_i (the JVP of the forward; linear in
// (dU, dx)).
template <typename T, int N>
void TangentRange(const T* image, const T* grid, const T* d_image, const T* d_grid, T* out,
                  const Geometry& geo, const Options& o, int64_t begin, int64_t end) {
  const int64_t C = geo.channels;
  constexpr int kTaps = 1 << N;
  Rows<T> rows(C);
  Point<T, N> pt;
  for (int64_t p = begin; p < end; ++p) {
    const int64_t offset = (p / geo.points) * geo.image_slice;
    T* v = out + p * C;
    std::fill(v, v + C, T(0));
    if (!MakePoint<T, N>(grid + p * N, geo, o, image + offset, nullptr, rows.zeros.data(),
                         rows.scratch.data(), &pt)) {
      continue;
    }
    const int taps = o.kernel == kNearest ? 1 : kTaps;
    for (int t = 0; t < taps; ++t) {
      if (!pt.inside[t]) continue;
      const T* du = d_image + (pt.read[t] - image);
      for (int64_t c = 0; c < C; ++c) v[c] += pt.weight[t] * du[c];
    }
    if (o.kernel == kNearest) continue;
    T dx[N];
    for (int i = 0; i < N; ++i) dx[i] = pt.d_coord[i] * d_grid[p * N + N - 1 - i];
    T a[kTaps], slope[N];
    for (int64_t c = 0; c < C; ++c) {
      for (int t = 0; t < kTaps; ++t) a[t] = pt.read[t][c];
      LinearSlopes<T, N>(a, pt.frac, slope);
      for (int i = 0; i < N; ++i) v[c] += slope[i] * dx[i];
    }
  }
}

// One batch slice: its image cotangent (owned by this call, accumulated in point order, so the
// same bits whatever thread runs it) and its points' grid cotangents (paper eqs. 6-7).
template <typename T, int N>
void BackwardSlice(const T* image, const T* grid, const T* ct, T* d_image, T* d_grid,
                   const Geometry& geo, const Options& o, int64_t b) {
  const int64_t C = geo.channels;
  constexpr int kTaps = 1 << N;
  const T* img = image + b * geo.image_slice;
  T* d_img = d_image + b * geo.image_slice;
  std::fill(d_img, d_img + geo.image_slice, T(0));
  Rows<T> rows(C);
  Point<T, N> pt;
  for (int64_t q = 0; q < geo.points; ++q) {
    const int64_t p = b * geo.points + q;
    const T* ct_p = ct + p * C;
    T* dg = d_grid + p * N;
    for (int a = 0; a < N; ++a) dg[a] = T(0);
    if (!MakePoint<T, N>(grid + p * N, geo, o, img, d_img, rows.zeros.data(),
                         rows.scratch.data(), &pt)) {
      continue;
    }
    if (o.kernel == kNearest) {
      T* du = pt.write[0];
      for (int64_t c = 0; c < C; ++c) du[c] += ct_p[c];
      continue;
    }
    T grad[N] = {};
    T a[kTaps], slope[N];
    for (int64_t c = 0; c < C; ++c) {
      const T g = ct_p[c];
      for (int t = 0; t < kTaps; ++t) {
        a[t] = pt.read[t][c];
        pt.write[t][c] += pt.weight[t] * g;
      }
      LinearSlopes<T, N>(a, pt.frac, slope);
      for (int i = 0; i < N; ++i) grad[i] += g * slope[i];
    }
    for (int i = 0; i < N; ++i) dg[N - 1 - i] = grad[i] * pt.d_coord[i];
  }
}

// ------------------------------------------------------------------ threads

// Runs body(i) for i in [0, count) on up to `threads` threads (the caller included) of XLA's
// pool. Work is claimed from a shared counter, so the caller finishes everything itself if no
// pool thread is free (no deadlock when the caller is a pool thread); it returns when all of it
// is done. Which thread runs an item never changes its result.
void ParallelFor(ffi::ThreadPool& pool, int64_t threads, int64_t count,
                 const std::function<void(int64_t)>& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mutex;
    std::condition_variable finished;
  };
  auto state = std::make_shared<State>();
  auto work = [state, count, &body]() {
    for (int64_t i = state->next.fetch_add(1); i < count; i = state->next.fetch_add(1)) {
      body(i);
      if (state->done.fetch_add(1) + 1 == count) {
        std::lock_guard<std::mutex> lock(state->mutex);
        state->finished.notify_all();
      }
    }
  };
  const int64_t helpers = std::min<int64_t>(threads, count) - 1;
  for (int64_t h = 0; h < helpers; ++h) {
    // A helper that starts after everything is done finds no work and touches only `state`.
    pool.Schedule(decltype(work)(work));
  }
  work();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->finished.wait(lock, [&] { return state->done.load() == count; });
}

int64_t ThreadCount(ffi::ThreadPool& pool, int64_t max_threads) {
  int64_t available = std::max<int64_t>(1, pool.num_threads());
  return max_threads > 0 ? max_threads : available;
}

// ------------------------------------------------------------------ FFI handlers

ffi::Error MakeGeometry(ffi::AnyBuffer image, ffi::AnyBuffer grid, Geometry* geo,
                        int64_t* batch) {
  const auto idims = image.dimensions();
  const auto gdims = grid.dimensions();
  if (gdims.size() < 3) return ffi::Error::InvalidArgument("stn sampler: grid rank < 3");
  const int n = static_cast<int>(gdims[gdims.size() - 1]);
  if (n != 2 && n != 3) return ffi::Error::InvalidArgument("stn sampler: grid's last axis not 2/3");
  if (idims.size() != gdims.size() || static_cast<int>(idims.size()) < n + 2) {
    return ffi::Error::InvalidArgument("stn sampler: image and grid ranks differ");
  }
  const int lead = static_cast<int>(idims.size()) - n - 1;
  int64_t b = 1;
  for (int i = 0; i < lead; ++i) {
    if (idims[i] != gdims[i]) return ffi::Error::InvalidArgument("stn sampler: batch sizes differ");
    b *= idims[i];
  }
  geo->num_axes = n;
  geo->channels = idims[idims.size() - 1];
  int64_t stride = geo->channels;
  for (int i = n - 1; i >= 0; --i) {
    geo->sizes[i] = idims[lead + i];
    geo->strides[i] = stride;
    stride *= geo->sizes[i];
  }
  geo->image_slice = stride;
  geo->points = 1;
  for (int i = 0; i < n; ++i) geo->points *= gdims[lead + i];
  *batch = b;
  return ffi::Error::Success();
}

Options MakeOptions(int64_t kernel, int64_t padding, bool align_corners) {
  return Options{kernel, padding, align_corners};
}

// Points per forward work item: enough to amortise scheduling, small enough to balance.
constexpr int64_t kForwardBlock = 4096;

template <typename T, int N>
void ForwardTyped(ffi::ThreadPool& pool, int64_t threads, const Geometry& geo, const Options& o,
                  int64_t batch, const T* image, const T* grid, T* out) {
  const int64_t total = batch * geo.points;
  const int64_t blocks = (total + kForwardBlock - 1) / kForwardBlock;
  ParallelFor(pool, threads, blocks, [&](int64_t i) {
    ForwardRange<T, N>(image, grid, out, geo, o, i * kForwardBlock,
                       std::min(total, (i + 1) * kForwardBlock));
  });
}

template <typename T, int N>
void TangentTyped(ffi::ThreadPool& pool, int64_t threads, const Geometry& geo, const Options& o,
                  int64_t batch, const T* image, const T* grid, const T* d_image, const T* d_grid,
                  T* out) {
  const int64_t total = batch * geo.points;
  const int64_t blocks = (total + kForwardBlock - 1) / kForwardBlock;
  ParallelFor(pool, threads, blocks, [&](int64_t i) {
    TangentRange<T, N>(image, grid, d_image, d_grid, out, geo, o, i * kForwardBlock,
                       std::min(total, (i + 1) * kForwardBlock));
  });
}

template <typename T, int N>
void BackwardTyped(ffi::ThreadPool& pool, int64_t threads, const Geometry& geo, const Options& o,
                   int64_t batch, const T* image, const T* grid, const T* ct, T* d_image,
                   T* d_grid) {
  ParallelFor(pool, threads, batch, [&](int64_t b) {
    BackwardSlice<T, N>(image, grid, ct, d_image, d_grid, geo, o, b);
  });
}

ffi::Error CheckOptions(int64_t kernel, int64_t padding) {
  if (kernel != kNearest && kernel != kLinear) {
    return ffi::Error::InvalidArgument("stn sampler: kernel must be 0 (nearest) or 1 (linear)");
  }
  if (padding < kZeros || padding > kReflection) {
    return ffi::Error::InvalidArgument("stn sampler: padding must be 0, 1 or 2");
  }
  return ffi::Error::Success();
}

ffi::Error SampleForward(ffi::ThreadPool pool, ffi::AnyBuffer image, ffi::AnyBuffer grid,
                         ffi::Result<ffi::AnyBuffer> out, int64_t kernel, int64_t padding,
                         bool align_corners, int64_t max_threads) {
  if (auto e = CheckOptions(kernel, padding); e.failure()) return e;
  Geometry geo;
  int64_t batch;
  if (auto e = MakeGeometry(image, grid, &geo, &batch); e.failure()) return e;
  const Options o = MakeOptions(kernel, padding, align_corners);
  const int64_t threads = ThreadCount(pool, max_threads);
  const auto type = image.element_type();
  if (grid.element_type() != type || out->element_type() != type) {
    return ffi::Error::InvalidArgument("stn sampler: image, grid and output dtypes differ");
  }
  if (type == ffi::DataType::F32) {
    auto run = [&](auto n) {
      ForwardTyped<float, decltype(n)::value>(pool, threads, geo, o, batch,
                                              image.typed_data<float>(), grid.typed_data<float>(),
                                              out->typed_data<float>());
    };
    geo.num_axes == 2 ? run(std::integral_constant<int, 2>()) : run(std::integral_constant<int, 3>());
  } else if (type == ffi::DataType::F64) {
    auto run = [&](auto n) {
      ForwardTyped<double, decltype(n)::value>(pool, threads, geo, o, batch,
                                               image.typed_data<double>(),
                                               grid.typed_data<double>(),
                                               out->typed_data<double>());
    };
    geo.num_axes == 2 ? run(std::integral_constant<int, 2>()) : run(std::integral_constant<int, 3>());
  } else {
    return ffi::Error::InvalidArgument("stn sampler: dtype must be float32 or float64");
  }
  return ffi::Error::Success();
}

ffi::Error SampleTangent(ffi::ThreadPool pool, ffi::AnyBuffer image, ffi::AnyBuffer grid,
                         ffi::AnyBuffer d_image, ffi::AnyBuffer d_grid,
                         ffi::Result<ffi::AnyBuffer> out, int64_t kernel, int64_t padding,
                         bool align_corners, int64_t max_threads) {
  if (auto e = CheckOptions(kernel, padding); e.failure()) return e;
  Geometry geo;
  int64_t batch;
  if (auto e = MakeGeometry(image, grid, &geo, &batch); e.failure()) return e;
  const Options o = MakeOptions(kernel, padding, align_corners);
  const int64_t threads = ThreadCount(pool, max_threads);
  const auto type = image.element_type();
  if (grid.element_type() != type || d_image.element_type() != type ||
      d_grid.element_type() != type || out->element_type() != type) {
    return ffi::Error::InvalidArgument("stn sampler: image, grid and tangent dtypes differ");
  }
  if (type == ffi::DataType::F32) {
    auto run = [&](auto n) {
      TangentTyped<float, decltype(n)::value>(
          pool, threads, geo, o, batch, image.typed_data<float>(), grid.typed_data<float>(),
          d_image.typed_data<float>(), d_grid.typed_data<float>(), out->typed_data<float>());
    };
    geo.num_axes == 2 ? run(std::integral_constant<int, 2>()) : run(std::integral_constant<int, 3>());
  } else if (type == ffi::DataType::F64) {
    auto run = [&](auto n) {
      TangentTyped<double, decltype(n)::value>(
          pool, threads, geo, o, batch, image.typed_data<double>(), grid.typed_data<double>(),
          d_image.typed_data<double>(), d_grid.typed_data<double>(), out->typed_data<double>());
    };
    geo.num_axes == 2 ? run(std::integral_constant<int, 2>()) : run(std::integral_constant<int, 3>());
  } else {
    return ffi::Error::InvalidArgument("stn sampler: dtype must be float32 or float64");
  }
  return ffi::Error::Success();
}

ffi::Error SampleBackward(ffi::ThreadPool pool, ffi::AnyBuffer image, ffi::AnyBuffer grid,
                          ffi::AnyBuffer ct, ffi::Result<ffi::AnyBuffer> d_image,
                          ffi::Result<ffi::AnyBuffer> d_grid, int64_t kernel, int64_t padding,
                          bool align_corners, int64_t max_threads) {
  if (auto e = CheckOptions(kernel, padding); e.failure()) return e;
  Geometry geo;
  int64_t batch;
  if (auto e = MakeGeometry(image, grid, &geo, &batch); e.failure()) return e;
  const Options o = MakeOptions(kernel, padding, align_corners);
  const int64_t threads = ThreadCount(pool, max_threads);
  const auto type = image.element_type();
  if (grid.element_type() != type || ct.element_type() != type ||
      d_image->element_type() != type || d_grid->element_type() != type) {
    return ffi::Error::InvalidArgument("stn sampler: image, grid and cotangent dtypes differ");
  }
  if (type == ffi::DataType::F32) {
    auto run = [&](auto n) {
      BackwardTyped<float, decltype(n)::value>(
          pool, threads, geo, o, batch, image.typed_data<float>(), grid.typed_data<float>(),
          ct.typed_data<float>(), d_image->typed_data<float>(), d_grid->typed_data<float>());
    };
    geo.num_axes == 2 ? run(std::integral_constant<int, 2>()) : run(std::integral_constant<int, 3>());
  } else if (type == ffi::DataType::F64) {
    auto run = [&](auto n) {
      BackwardTyped<double, decltype(n)::value>(
          pool, threads, geo, o, batch, image.typed_data<double>(), grid.typed_data<double>(),
          ct.typed_data<double>(), d_image->typed_data<double>(), d_grid->typed_data<double>());
    };
    geo.num_axes == 2 ? run(std::integral_constant<int, 2>()) : run(std::integral_constant<int, 3>());
  } else {
    return ffi::Error::InvalidArgument("stn sampler: dtype must be float32 or float64");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(StnSampleForward, SampleForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // image
                                  .Arg<ffi::AnyBuffer>()  // grid
                                  .Ret<ffi::AnyBuffer>()  // output
                                  .Attr<int64_t>("kernel")
                                  .Attr<int64_t>("padding")
                                  .Attr<bool>("align_corners")
                                  .Attr<int64_t>("max_threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(StnSampleBackward, SampleBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // image
                                  .Arg<ffi::AnyBuffer>()  // grid
                                  .Arg<ffi::AnyBuffer>()  // output cotangent
                                  .Ret<ffi::AnyBuffer>()  // image cotangent
                                  .Ret<ffi::AnyBuffer>()  // grid cotangent
                                  .Attr<int64_t>("kernel")
                                  .Attr<int64_t>("padding")
                                  .Attr<bool>("align_corners")
                                  .Attr<int64_t>("max_threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(StnSampleTangent, SampleTangent,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()  // image
                                  .Arg<ffi::AnyBuffer>()  // grid
                                  .Arg<ffi::AnyBuffer>()  // image tangent
                                  .Arg<ffi::AnyBuffer>()  // grid tangent
                                  .Ret<ffi::AnyBuffer>()  // output tangent
                                  .Attr<int64_t>("kernel")
                                  .Attr<int64_t>("padding")
                                  .Attr<bool>("align_corners")
                                  .Attr<int64_t>("max_threads"));
