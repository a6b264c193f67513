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
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr double kCoordinateBound = 4194304.0;  // 2^22, stn.sampling.COORDINATE_BOUND

enum KernelKind : int64_t { kNearest = 0, kLinear = 1 };
enum PaddingKind : int64_t { kZeros = 0, kBorder = 1, kReflection = 2 };

// Shapes of one call: any axes before the spatial ones are folded into the batch.
struct Geometry {
  int num_axes;         // N
  int64_t batch;
  int64_t sizes[3];     // image spatial sizes in image order ((D,) H, W)
  int64_t strides[3];   // element strides of those axes in a batch slice
  int64_t channels;
  int64_t points;       // output points per batch slice
  int64_t image_slice;  // elements of one batch slice of the image
  bool align_corners;
};

// ------------------------------------------------------------------ vectors
//
// GCC/Clang vector extensions: kLanes values of T per vector (with AVX 32 bytes: 8 floats, 4
// doubles; else 16 bytes), which the compiler maps to AVX2/AVX-512 with -march=native, to SSE or
// NEON elsewhere, or to scalar code. The per-point arithmetic (coordinates, taps, weights, the linear value and slopes)
// runs kLanes points at a time with selects instead of branches; only the image cotangent's
// scatter stays point by point (lanes may hit the same pixel). Every point goes through the same
// vector code whatever its position in a block, and -ffp-contract=off keeps each operation a
// separately rounded IEEE one, so the bits depend neither on the block nor on the thread.

// The widest vectors of the target: 32 bytes with AVX, else 16 (SSE, NEON), so that no vector is
// split into halves or passed through memory.
#if defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif

template <typename T>
struct Simd {
  static constexpr int kLanes = kVectorBytes / static_cast<int>(sizeof(T));
  typedef T V __attribute__((vector_size(kVectorBytes)));
  typedef int32_t I __attribute__((vector_size(4 * (kVectorBytes / sizeof(T)))));
  typedef decltype(V{} < V{}) M;  // a comparison's mask: lanes of T's width
};

template <typename V>
inline V Load(const void* from) {
  V v;
  std::memcpy(&v, from, sizeof v);
  return v;
}

template <typename V>
inline void Store(void* to, const V& v) {
  std::memcpy(to, &v, sizeof v);
}

// floor(c) for |c| < 2^31 (the coordinates are clamped to 2^22 pixels): truncate, then step
// down where truncation rounded up. Equal to std::floor except that -0 gives +0.
template <typename T>
inline typename Simd<T>::V Floor(typename Simd<T>::V c) {
  using V = typename Simd<T>::V;
  using I = typename Simd<T>::I;
  const V t = __builtin_convertvector(__builtin_convertvector(c, I), V);
  return t > c ? t - T(1) : t;
}

// A T-lane mask (all bits set where true) as int32 lanes, and back.
template <typename T, typename M>
inline typename Simd<T>::I NarrowMask(M mask) {
  return __builtin_convertvector(mask, typename Simd<T>::I);
}

template <typename T>
inline typename Simd<T>::M WidenMask(typename Simd<T>::I mask) {
  return __builtin_convertvector(mask, typename Simd<T>::M);
}

// base[index] in the lanes where mask is set, 0 elsewhere (masked lanes are never read). With
// AVX2, one masked gather instruction.
template <typename T>
inline typename Simd<T>::V Gather(const T* base, typename Simd<T>::I index,
                                  typename Simd<T>::I mask) {
  using V = typename Simd<T>::V;
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, float>) {
    return (V)_mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, (__m256i)index, (__m256)mask,
                                       4);
  } else {
    return (V)_mm256_mask_i32gather_pd(_mm256_setzero_pd(), base, (__m128i)index,
                                       (__m256d)WidenMask<T>(mask), 8);
  }
#else
  V value = V{};
  for (int l = 0; l < Simd<T>::kLanes; ++l) value[l] = mask[l] ? base[index[l]] : T(0);
  return value;
#endif
}

// ------------------------------------------------------------------ coordinates, a block at a time
//
// The per-point coordinate arithmetic (unnormalize, clamp, padding, floor) runs over a block of
// points in structure-of-arrays form, kLanes points at a time (the tail of a block is padded with
// zeros and its lanes ignored).

constexpr int kBlock = 256;  // a multiple of every kLanes

template <typename T, int N>
struct Coordinates {
  int32_t first[N][kBlock];  // lowest tap per image axis (0 = outermost)
  T frac[N][kBlock];         // x - floor(x) (linear), 0 (nearest)
  T d_coord[N][kBlock];      // d(padded pixel coordinate)/d(grid coordinate)
  int32_t valid[kBlock];     // -1 where every coordinate is finite, else 0
};

// One axis of stn.sampling: unnormalize, clamp to +-2^22 (jnp.clip's gradient: 1/2 at the bound,
// 0 beyond), then apply_padding (border: clip with gradient only strictly inside; reflection:
// reflect_coordinates, where |.|' = 1 at 0 as jnp.abs's, then clip). A non-finite g is replaced
// by 0 here and its point marked invalid.
template <typename T, int N, int K, int P>
void AxisCoordinates(const T* grid, int count, int image_axis, const Geometry& geo,
                     Coordinates<T, N>* __restrict__ out) {
  using V = typename Simd<T>::V;
  using I = typename Simd<T>::I;
  constexpr int L = Simd<T>::kLanes;
  const int grid_axis = N - 1 - image_axis;
  const int64_t size = geo.sizes[image_axis];
  const T size_t_ = T(size), upper = T(size - 1), bound = T(kCoordinateBound);
  const bool ac = geo.align_corners;
  const T scale = ac ? T(0.5) * upper : size_t_ * T(0.5);
  const T low = ac ? T(0) : T(-0.5);
  const T high = ac ? upper : size_t_ - T(0.5);
  const T span = high - low;
  // unnormalize as ((g + 1) m - s) r: align_corners (g + 1) 0.5 (size - 1), else
  // ((g + 1) size - 1) 0.5; the same operations in the same order as stn.sampling's.
  const T m = ac ? T(0.5) : size_t_, shift = ac ? T(0) : T(1), r = ac ? upper : T(0.5);
  const V zero = V{};
  T column[kBlock];  // this axis's coordinates, contiguous, zero-padded to whole vectors
  const int padded = (count + L - 1) / L * L;
  for (int p = 0; p < count; ++p) column[p] = grid[p * N + grid_axis];
  for (int p = count; p < padded; ++p) column[p] = T(0);
  for (int p = 0; p < padded; p += L) {
    V g = Load<V>(column + p);
    const auto finite = (g - g) == zero;  // false for NaN and +-inf
    g = finite ? g : zero;
    V c = ((g + T(1)) * m - shift) * r;
    const auto beyond = (c > bound) | (c < -bound);
    const auto at = (c == bound) | (c == -bound);
    V d = beyond ? zero : (at ? zero + scale * T(0.5) : zero + scale);
    c = c > bound ? zero + bound : (c < -bound ? zero - bound : c);
    if constexpr (P == kReflection) {
      const V offset = c - low;
      const auto negative = offset < zero;
      const V distance = negative ? -offset : offset;
      const V d_distance = negative ? -d : d;
      const V flips = Floor<T>(distance / span);
      const V extra = distance - flips * span;
      const V half = flips * T(0.5);
      const auto even = half == Floor<T>(half);  // flips is a non-negative integer
      if (span > T(0)) {
        c = even ? low + extra : high - extra;
        d = even ? d_distance : -d_distance;
      } else {  // a 1-pixel axis with align_corners
        c = zero;
        d = zero;
      }
    }
    if constexpr (P != kZeros) {
      const auto inside = (c > zero) & (c < upper);
      d = inside ? d : zero;
      c = inside ? c : (c <= zero ? zero : zero + upper);
    }
    const V lower = K == kNearest ? Floor<T>(c + T(0.5)) : Floor<T>(c);
    Store(out->first[image_axis] + p, __builtin_convertvector(lower, I));
    Store(out->frac[image_axis] + p, K == kNearest ? zero : c - lower);
    Store(out->d_coord[image_axis] + p, d);
    Store(out->valid + p, Load<I>(out->valid + p) & NarrowMask<T>(finite));
  }
}

template <typename T, int N, int K, int P>
void BlockCoordinates(const T* grid, int count, const Geometry& geo, Coordinates<T, N>* out) {
  std::fill(out->valid, out->valid + kBlock, int32_t{-1});
  for (int i = 0; i < N; ++i) AxisCoordinates<T, N, K, P>(grid, count, i, geo, out);
}

// ------------------------------------------------------------------ one point's taps

// The taps of point p of a block: 2^N for the linear kernel, 1 for the nearest. Tap t's bit
// (N - 1 - i) says whether image axis i takes first_i or first_i + 1. A tap outside the image is
// never read (its value is 0) or written, so no NaN of a masked value can leak through a zero
// weight.
template <typename T, int N, int K>
struct Taps {
  static constexpr int kCount = K == kNearest ? 1 : (1 << N);
  int64_t offset[kCount];
  bool inside[kCount];
  T weight[kCount];
};

template <typename T, int N, int K>
inline void PointTaps(const Coordinates<T, N>& co, int p, const Geometry& geo,
                      Taps<T, N, K>* taps) {
  for (int t = 0; t < Taps<T, N, K>::kCount; ++t) {
    bool inside = true;
    int64_t offset = 0;
    T weight = T(1);
    for (int i = 0; i < N; ++i) {
      const int bit = (t >> (N - 1 - i)) & 1;
      const int64_t index = static_cast<int64_t>(co.first[i][p]) + bit;
      inside = inside && static_cast<uint64_t>(index) < static_cast<uint64_t>(geo.sizes[i]);
      offset += index * geo.strides[i];
      if constexpr (K == kLinear) weight *= bit ? co.frac[i][p] : T(1) - co.frac[i][p];
    }
    taps->inside[t] = inside;
    taps->offset[t] = inside ? offset : 0;
    taps->weight[t] = weight;
  }
}

// Linear interpolation in lerp form a0 + f (a1 - a0), innermost axis (x) first, as the
// bilinear path of stn.sampling: a constant image gives its value exactly and zero slopes.
// These helpers take a scalar T or a vector of them (Simd<T>::V), with the same operations.
template <typename T>
inline T Lerp(T a0, T a1, T f) {
  return a0 + f * (a1 - a0);
}

// The value at one channel from the 2^N tap values a[t]; f[i] per image axis.
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

// The derivative of a 3-D lerp along one axis, as the window path of stn.sampling takes it: the
// kernel's slopes -1 at tap 0 and +1 at tap 1, except that a fraction rounded up to exactly 1
// puts tap 0 at distance 1, outside the kernel's support [-1, 1) (weight and slope 0).
template <typename T>
inline T WindowDiff(T a0, T a1, T f) {
  return f == T{} + 1 ? -a1 : a1 - a0;
}

// dV/dx_i at one channel per image axis i (paper eq. 7): the interpolation with axis i's lerp
// replaced by the one-sided difference a1 - a0 (the derivative on the right of a kink). 2-D
// follows stn.sampling's bilinear path, 3-D its window path (WindowDiff).
template <typename T, int N>
inline void LinearSlopes(const T* a, const T* f, T* slope) {
  if constexpr (N == 2) {
    slope[1] = Lerp(a[1] - a[0], a[3] - a[2], f[0]);
    slope[0] = Lerp(a[2] - a[0], a[3] - a[1], f[1]);
  } else {
    T along_x[4], diff_x[4];
    for (int zy = 0; zy < 4; ++zy) {
      along_x[zy] = Lerp(a[2 * zy], a[2 * zy + 1], f[2]);
      diff_x[zy] = WindowDiff(a[2 * zy], a[2 * zy + 1], f[2]);
    }
    slope[0] = WindowDiff(Lerp(along_x[0], along_x[1], f[1]), Lerp(along_x[2], along_x[3], f[1]),
                          f[0]);
    slope[1] = Lerp(WindowDiff(along_x[0], along_x[1], f[1]),
                    WindowDiff(along_x[2], along_x[3], f[1]), f[0]);
    slope[2] = Lerp(Lerp(diff_x[0], diff_x[1], f[1]), Lerp(diff_x[2], diff_x[3], f[1]), f[0]);
  }
}

// The tap values of one channel c (0 outside the image).
template <typename T, int N, int K>
inline void TapValues(const T* img, const Taps<T, N, K>& taps, int64_t c, T* a) {
  for (int t = 0; t < Taps<T, N, K>::kCount; ++t) {
    a[t] = taps.inside[t] ? img[taps.offset[t] + c] : T(0);
  }
}

// ------------------------------------------------------------------ kLanes points' taps

// The 2^N taps of the linear kernel for points [p, p + kLanes) of a block: flat offsets in a
// batch slice (int32: used only where a slice has fewer than 2^31 elements) and whether each tap
// is inside the image (and its point valid). Offsets of taps outside are 0 and never used.
template <typename T, int N>
struct LaneTaps {
  static constexpr int kCount = 1 << N;
  typename Simd<T>::I offset[kCount];
  typename Simd<T>::I inside[kCount];
};

template <typename T, int N>
inline void LoadLaneTaps(const Coordinates<T, N>& co, int p, const Geometry& geo,
                         LaneTaps<T, N>* taps) {
  using I = typename Simd<T>::I;
  const I zero = I{};
  I index[N][2], inside[N][2];
  for (int i = 0; i < N; ++i) {
    const int32_t size = static_cast<int32_t>(geo.sizes[i]);
    for (int bit = 0; bit < 2; ++bit) {
      const I at = Load<I>(co.first[i] + p) + bit;
      inside[i][bit] = (at >= 0) & (at < size);
      index[i][bit] = inside[i][bit] ? at : zero;  // no int32 overflow in the offsets below
    }
  }
  const I valid = Load<I>(co.valid + p);
  for (int t = 0; t < LaneTaps<T, N>::kCount; ++t) {
    I offset = zero, in = valid;
    for (int i = 0; i < N; ++i) {
      const int bit = (t >> (N - 1 - i)) & 1;
      in &= inside[i][bit];
      offset += index[i][bit] * static_cast<int32_t>(geo.strides[i]);
    }
    taps->offset[t] = in ? offset : zero;
    taps->inside[t] = in;
  }
}

// The linear kernel on one channel (C == 1, the common case of images and volumes), kLanes
// points at a time: the forward, and the backward's grid cotangent with the image cotangent's
// weights (scattered point by point by the caller).
template <typename T, int N>
struct SingleChannel {
  using V = typename Simd<T>::V;
  using I = typename Simd<T>::I;
  static constexpr int L = Simd<T>::kLanes;
  static constexpr int kCount = LaneTaps<T, N>::kCount;

  static void Taps(const T* img, const Coordinates<T, N>& co, int p, const Geometry& geo,
                   LaneTaps<T, N>* taps, V* a, V* f) {
    LoadLaneTaps<T, N>(co, p, geo, taps);
    for (int t = 0; t < kCount; ++t) a[t] = Gather<T>(img, taps->offset[t], taps->inside[t]);
    for (int i = 0; i < N; ++i) f[i] = Load<V>(co.frac[i] + p);
  }

  // V = S(U; x) for the block's `count` points into out[0, count). An invalid point has every
  // tap masked and a finite fraction, so its value is 0 + f (0 - 0) = +0.
  static void Forward(const T* img, const Coordinates<T, N>& co, int count, const Geometry& geo,
                      T* out) {
    LaneTaps<T, N> taps;
    V a[kCount], f[N];
    for (int p = 0; p < count; p += L) {
      Taps(img, co, p, geo, &taps, a, f);
      const V value = LinearValue<V, N>(a, f);
      if (count - p >= L) {
        Store(out + p, value);
      } else {
        std::memcpy(out + p, &value, (count - p) * sizeof(T));
      }
    }
  }

  // dL/dx into d_grid (interleaved x, y[, z]; 0 at invalid points), and per tap the weight and
  // the offset (-1 outside) of the image cotangent's scatter, for the block's points.
  static void Backward(const T* img, const Coordinates<T, N>& co, const T* ct, int count,
                       const Geometry& geo, T* d_grid, T (*weight)[kBlock],
                       int32_t (*offset)[kBlock]) {
    LaneTaps<T, N> taps;
    V a[kCount], f[N], slope[N];
    const V zero = V{};
    for (int p = 0; p < count; p += L) {
      Taps(img, co, p, geo, &taps, a, f);
      LinearSlopes<V, N>(a, f, slope);
      const V c = Load<V>(ct + p);
      const auto valid = WidenMask<T>(Load<I>(co.valid + p));
      const int lanes = std::min(L, count - p);
      for (int i = 0; i < N; ++i) {
        const V grad = valid ? (zero + c * slope[i]) * Load<V>(co.d_coord[i] + p) : zero;
        for (int l = 0; l < lanes; ++l) d_grid[(p + l) * N + N - 1 - i] = grad[l];
      }
      for (int t = 0; t < kCount; ++t) {
        V w = zero + T(1);
        for (int i = 0; i < N; ++i) w = w * (((t >> (N - 1 - i)) & 1) ? f[i] : T(1) - f[i]);
        Store(weight[t] + p, w);
        Store(offset[t] + p, taps.inside[t] ? taps.offset[t] : I{} - 1);
      }
    }
  }
};

// ------------------------------------------------------------------ the three passes

// Whether the vector path of one channel applies: C == 1 and int32 offsets suffice.
inline bool SingleChannelFits(const Geometry& geo) {
  return geo.channels == 1 && geo.image_slice < (int64_t{1} << 31);
}

template <typename T, int N, int K, int P>
struct Pass {
  using Co = Coordinates<T, N>;
  using Tp = Taps<T, N, K>;

  // Output points [begin, end) of batch slice b: V = S(U; x) (paper eq. 3).
  static void Forward(const T* image, const T* grid, T* out, const Geometry& geo, int64_t b,
                      int64_t begin, int64_t end) {
    const int64_t C = geo.channels;
    const T* img = image + b * geo.image_slice;
    Co co;
    Tp taps;
    T a[Tp::kCount], f[N];
    for (int64_t start = begin; start < end; start += kBlock) {
      const int count = static_cast<int>(std::min<int64_t>(kBlock, end - start));
      const int64_t first_point = b * geo.points + start;
      BlockCoordinates<T, N, K, P>(grid + first_point * N, count, geo, &co);
      if constexpr (K == kLinear) {
        if (SingleChannelFits(geo)) {
          SingleChannel<T, N>::Forward(img, co, count, geo, out + first_point);
          continue;
        }
      }
      for (int p = 0; p < count; ++p) {
        T* v = out + (first_point + p) * C;
        if (!co.valid[p]) {
          std::fill(v, v + C, T(0));
          continue;
        }
        PointTaps<T, N, K>(co, p, geo, &taps);
        if constexpr (K == kNearest) {
          if (taps.inside[0]) {
            std::copy(img + taps.offset[0], img + taps.offset[0] + C, v);
          } else {
            std::fill(v, v + C, T(0));
          }
        } else {
          for (int i = 0; i < N; ++i) f[i] = co.frac[i][p];
          for (int64_t c = 0; c < C; ++c) {
            TapValues<T, N, K>(img, taps, c, a);
            v[c] = LinearValue<T, N>(a, f);
          }
        }
      }
    }
  }

  // Forward mode on points [begin, end) of slice b: dV = sum_t w_t dU[t] + sum_i dV/dx_i dx_i.
  static void Tangent(const T* image, const T* grid, const T* d_image, const T* d_grid, T* out,
                      const Geometry& geo, int64_t b, int64_t begin, int64_t end) {
    const int64_t C = geo.channels;
    const T* img = image + b * geo.image_slice;
    const T* d_img = d_image + b * geo.image_slice;
    Co co;
    Tp taps;
    T a[Tp::kCount], f[N], slope[N], dx[N];
    for (int64_t start = begin; start < end; start += kBlock) {
      const int count = static_cast<int>(std::min<int64_t>(kBlock, end - start));
      const int64_t first_point = b * geo.points + start;
      BlockCoordinates<T, N, K, P>(grid + first_point * N, count, geo, &co);
      for (int p = 0; p < count; ++p) {
        const int64_t point = first_point + p;
        T* v = out + point * C;
        std::fill(v, v + C, T(0));
        if (!co.valid[p]) continue;
        PointTaps<T, N, K>(co, p, geo, &taps);
        for (int t = 0; t < Tp::kCount; ++t) {
          if (!taps.inside[t]) continue;
          const T* du = d_img + taps.offset[t];
          for (int64_t c = 0; c < C; ++c) v[c] += taps.weight[t] * du[c];
        }
        if constexpr (K == kLinear) {
          for (int i = 0; i < N; ++i) {
            f[i] = co.frac[i][p];
            dx[i] = co.d_coord[i][p] * d_grid[point * N + N - 1 - i];
          }
          for (int64_t c = 0; c < C; ++c) {
            TapValues<T, N, K>(img, taps, c, a);
            LinearSlopes<T, N>(a, f, slope);
            for (int i = 0; i < N; ++i) v[c] += slope[i] * dx[i];
          }
        }
      }
    }
  }

  // One block of Backward on one channel: the grid cotangent by the vector path, then the image
  // cotangent's scatter point by point, taps in order (the order of the general path).
  static void BackwardSingleBlock(const T* img, const Co& co, const T* ct, int count,
                                  const Geometry& geo, T* d_img, T* d_grid) {
    constexpr int kCount = LaneTaps<T, N>::kCount;
    T ct_block[kBlock];  // zero-padded to whole vectors
    T weight[kCount][kBlock];
    int32_t offset[kCount][kBlock];
    std::copy(ct, ct + count, ct_block);
    std::fill(ct_block + count, ct_block + kBlock, T(0));
    SingleChannel<T, N>::Backward(img, co, ct_block, count, geo, d_grid, weight, offset);
    for (int p = 0; p < count; ++p) {
      for (int t = 0; t < kCount; ++t) {
        if (offset[t][p] >= 0) d_img[offset[t][p]] += weight[t][p] * ct_block[p];
      }
    }
  }

  // Batch slice b: its image cotangent (owned by this call and accumulated in point order, so
  // the bits do not depend on the thread) and its points' grid cotangents (paper eqs. 6-7).
  static void Backward(const T* image, const T* grid, const T* ct, T* d_image, T* d_grid,
                       const Geometry& geo, int64_t b) {
    const int64_t C = geo.channels;
    const T* img = image + b * geo.image_slice;
    T* d_img = d_image + b * geo.image_slice;
    std::fill(d_img, d_img + geo.image_slice, T(0));
    Co co;
    Tp taps;
    T a[Tp::kCount], f[N], slope[N];
    for (int64_t start = 0; start < geo.points; start += kBlock) {
      const int count = static_cast<int>(std::min<int64_t>(kBlock, geo.points - start));
      const int64_t first_point = b * geo.points + start;
      BlockCoordinates<T, N, K, P>(grid + first_point * N, count, geo, &co);
      if constexpr (K == kLinear) {
        if (SingleChannelFits(geo)) {
          BackwardSingleBlock(img, co, ct + first_point, count, geo, d_img,
                              d_grid + first_point * N);
          continue;
        }
      }
      for (int p = 0; p < count; ++p) {
        const int64_t point = first_point + p;
        const T* ct_p = ct + point * C;
        T* dg = d_grid + point * N;
        for (int i = 0; i < N; ++i) dg[i] = T(0);
        if (!co.valid[p]) continue;
        PointTaps<T, N, K>(co, p, geo, &taps);
        for (int t = 0; t < Tp::kCount; ++t) {  // dL/dU (eq. 6)
          if (!taps.inside[t]) continue;
          T* du = d_img + taps.offset[t];
          const T w = taps.weight[t];
          for (int64_t c = 0; c < C; ++c) du[c] += w * ct_p[c];
        }
        if constexpr (K == kLinear) {  // dL/dx (eq. 7)
          for (int i = 0; i < N; ++i) f[i] = co.frac[i][p];
          T grad[N] = {};
          for (int64_t c = 0; c < C; ++c) {
            TapValues<T, N, K>(img, taps, c, a);
            LinearSlopes<T, N>(a, f, slope);
            for (int i = 0; i < N; ++i) grad[i] += ct_p[c] * slope[i];
          }
          for (int i = 0; i < N; ++i) dg[N - 1 - i] = grad[i] * co.d_coord[i][p];
        }
      }
    }
  }
};

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
  const int64_t available = std::max<int64_t>(1, pool.num_threads());
  return max_threads > 0 ? max_threads : available;
}

// Points per forward work item: enough to amortise scheduling, small enough to balance.
constexpr int64_t kPointsPerItem = 8192;

// The forward and tangent passes split every batch slice into items of kPointsPerItem points.
template <typename F>
void ForEachPointRange(ffi::ThreadPool& pool, int64_t threads, const Geometry& geo, F&& body) {
  const int64_t per_slice = std::max<int64_t>(1, (geo.points + kPointsPerItem - 1) / kPointsPerItem);
  ParallelFor(pool, threads, geo.batch * per_slice, [&](int64_t i) {
    const int64_t b = i / per_slice, part = i % per_slice;
    body(b, part * kPointsPerItem, std::min(geo.points, (part + 1) * kPointsPerItem));
  });
}

// ------------------------------------------------------------------ FFI handlers

ffi::Error MakeGeometry(ffi::AnyBuffer image, ffi::AnyBuffer grid, bool align_corners,
                        Geometry* geo) {
  const auto idims = image.dimensions();
  const auto gdims = grid.dimensions();
  if (gdims.size() < 3) return ffi::Error::InvalidArgument("stn sampler: grid rank < 3");
  const int n = static_cast<int>(gdims[gdims.size() - 1]);
  if (n != 2 && n != 3) return ffi::Error::InvalidArgument("stn sampler: grid's last axis not 2/3");
  if (idims.size() != gdims.size() || static_cast<int>(idims.size()) < n + 2) {
    return ffi::Error::InvalidArgument("stn sampler: image and grid ranks differ");
  }
  const int lead = static_cast<int>(idims.size()) - n - 1;
  geo->batch = 1;
  for (int i = 0; i < lead; ++i) {
    if (idims[i] != gdims[i]) return ffi::Error::InvalidArgument("stn sampler: batch sizes differ");
    geo->batch *= idims[i];
  }
  geo->num_axes = n;
  geo->align_corners = align_corners;
  geo->channels = idims[idims.size() - 1];
  int64_t stride = geo->channels;
  for (int i = n - 1; i >= 0; --i) {
    geo->sizes[i] = idims[lead + i];
    if (geo->sizes[i] >= (int64_t{1} << 30)) {
      return ffi::Error::InvalidArgument("stn sampler: a spatial axis of 2^30 pixels or more");
    }
    geo->strides[i] = stride;
    stride *= geo->sizes[i];
  }
  geo->image_slice = stride;
  geo->points = 1;
  for (int i = 0; i < n; ++i) geo->points *= gdims[lead + i];
  return ffi::Error::Success();
}

enum class Op { kForward, kTangent, kBackward };

// One call's buffers: inputs then results, in the handler's order.
struct Buffers {
  ffi::AnyBuffer in[4];
  int num_in;
  ffi::Result<ffi::AnyBuffer>* out[2];
  int num_out;
};

template <typename T, int N, int K, int P>
void Run(Op op, ffi::ThreadPool& pool, int64_t threads, const Geometry& geo, const Buffers& buf) {
  using S = Pass<T, N, K, P>;
  const T* image = buf.in[0].typed_data<T>();
  const T* grid = buf.in[1].typed_data<T>();
  if (op == Op::kForward) {
    T* out = (*buf.out[0])->template typed_data<T>();
    ForEachPointRange(pool, threads, geo, [&](int64_t b, int64_t begin, int64_t end) {
      S::Forward(image, grid, out, geo, b, begin, end);
    });
  } else if (op == Op::kTangent) {
    const T* d_image = buf.in[2].typed_data<T>();
    const T* d_grid = buf.in[3].typed_data<T>();
    T* out = (*buf.out[0])->template typed_data<T>();
    ForEachPointRange(pool, threads, geo, [&](int64_t b, int64_t begin, int64_t end) {
      S::Tangent(image, grid, d_image, d_grid, out, geo, b, begin, end);
    });
  } else {
    const T* ct = buf.in[2].typed_data<T>();
    T* d_image = (*buf.out[0])->template typed_data<T>();
    T* d_grid = (*buf.out[1])->template typed_data<T>();
    ParallelFor(pool, threads, geo.batch, [&](int64_t b) {
      S::Backward(image, grid, ct, d_image, d_grid, geo, b);
    });
  }
}

// Runtime (dtype, N, kernel, padding) -> the compiled Run.
template <typename T, int N, int K>
void RunPadding(int64_t padding, Op op, ffi::ThreadPool& pool, int64_t threads,
                const Geometry& geo, const Buffers& buf) {
  if (padding == kZeros) Run<T, N, K, kZeros>(op, pool, threads, geo, buf);
  if (padding == kBorder) Run<T, N, K, kBorder>(op, pool, threads, geo, buf);
  if (padding == kReflection) Run<T, N, K, kReflection>(op, pool, threads, geo, buf);
}

template <typename T>
void RunTyped(int64_t kernel, int64_t padding, Op op, ffi::ThreadPool& pool, int64_t threads,
              const Geometry& geo, const Buffers& buf) {
  if (geo.num_axes == 2) {
    kernel == kNearest ? RunPadding<T, 2, kNearest>(padding, op, pool, threads, geo, buf)
                       : RunPadding<T, 2, kLinear>(padding, op, pool, threads, geo, buf);
  } else {
    kernel == kNearest ? RunPadding<T, 3, kNearest>(padding, op, pool, threads, geo, buf)
                       : RunPadding<T, 3, kLinear>(padding, op, pool, threads, geo, buf);
  }
}

ffi::Error Dispatch(Op op, ffi::ThreadPool& pool, const Buffers& buf, int64_t kernel,
                    int64_t padding, bool align_corners, int64_t max_threads) {
  if (kernel != kNearest && kernel != kLinear) {
    return ffi::Error::InvalidArgument("stn sampler: kernel must be 0 (nearest) or 1 (linear)");
  }
  if (padding < kZeros || padding > kReflection) {
    return ffi::Error::InvalidArgument("stn sampler: padding must be 0, 1 or 2");
  }
  Geometry geo;
  if (auto e = MakeGeometry(buf.in[0], buf.in[1], align_corners, &geo); e.failure()) return e;
  const auto type = buf.in[0].element_type();
  for (int i = 0; i < buf.num_in; ++i) {
    if (buf.in[i].element_type() != type) {
      return ffi::Error::InvalidArgument("stn sampler: operand dtypes differ");
    }
  }
  for (int i = 0; i < buf.num_out; ++i) {
    if ((*buf.out[i])->element_type() != type) {
      return ffi::Error::InvalidArgument("stn sampler: result and operand dtypes differ");
    }
  }
  const int64_t threads = ThreadCount(pool, max_threads);
  if (type == ffi::DataType::F32) {
    RunTyped<float>(kernel, padding, op, pool, threads, geo, buf);
  } else if (type == ffi::DataType::F64) {
    RunTyped<double>(kernel, padding, op, pool, threads, geo, buf);
  } else {
    return ffi::Error::InvalidArgument("stn sampler: dtype must be float32 or float64");
  }
  return ffi::Error::Success();
}

ffi::Error SampleForward(ffi::ThreadPool pool, ffi::AnyBuffer image, ffi::AnyBuffer grid,
                         ffi::Result<ffi::AnyBuffer> out, int64_t kernel, int64_t padding,
                         bool align_corners, int64_t max_threads) {
  Buffers buf{{image, grid, image, image}, 2, {&out, &out}, 1};
  return Dispatch(Op::kForward, pool, buf, kernel, padding, align_corners, max_threads);
}

ffi::Error SampleTangent(ffi::ThreadPool pool, ffi::AnyBuffer image, ffi::AnyBuffer grid,
                         ffi::AnyBuffer d_image, ffi::AnyBuffer d_grid,
                         ffi::Result<ffi::AnyBuffer> out, int64_t kernel, int64_t padding,
                         bool align_corners, int64_t max_threads) {
  Buffers buf{{image, grid, d_image, d_grid}, 4, {&out, &out}, 1};
  return Dispatch(Op::kTangent, pool, buf, kernel, padding, align_corners, max_threads);
}

ffi::Error SampleBackward(ffi::ThreadPool pool, ffi::AnyBuffer image, ffi::AnyBuffer grid,
                          ffi::AnyBuffer ct, ffi::Result<ffi::AnyBuffer> d_image,
                          ffi::Result<ffi::AnyBuffer> d_grid, int64_t kernel, int64_t padding,
                          bool align_corners, int64_t max_threads) {
  Buffers buf{{image, grid, ct, image}, 3, {&d_image, &d_grid}, 2};
  return Dispatch(Op::kBackward, pool, buf, kernel, padding, align_corners, max_threads);
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
