// Writing k-quants (q4_k, q5_k, q6_k) for `olmoe quantize`: a port of src/core/quant.ts's quantizeK and quantizeQ6K
// (ggml's make_qkx2_quants / make_qx_quants), operation for operation in double precision, so that the bytes are the
// TypeScript reference's (test/quantize-native.test.ts checks them bitwise). Blocks are split over the thread pool.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "pool.h"
#include "quantize-k.h"

namespace olmoe {
namespace {

// JS Math.round then ties to even, as src/core/quant.ts: adding and subtracting 1.5·2⁵² rounds a double below 2⁵¹ in
// magnitude to the nearest integer, ties to even (the default rounding mode; no -ffast-math here), without the libm
// call nearbyint costs on baseline x86-64; larger values (and NaN) take nearbyint.
inline double nearest_int(double value) {
  constexpr double kMagic = 6755399441055744.0;  // 1.5 · 2^52
  if (std::fabs(value) < 2251799813685248.0) {   // 2^51
    const double rounded = (value + kMagic) - kMagic;
    return rounded == 0 ? std::copysign(0.0, value) : rounded;
  }
  return std::nearbyint(value);
}

// src/core/f16.ts float32ToF16Bits: double → float32, then round to nearest even in f16 (subnormals included).
uint16_t f16_bits(double value) {
  const float f = static_cast<float>(value);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint32_t sign = (bits >> 16) & 0x8000;
  const int exponent = static_cast<int>((bits >> 23) & 0xff);
  uint32_t mantissa = bits & 0x7fffff;
  if (exponent == 0xff) return static_cast<uint16_t>(sign | 0x7c00 | (mantissa ? 0x200 : 0));
  const int half_exponent = exponent - 127 + 15;
  if (half_exponent >= 31) return static_cast<uint16_t>(sign | 0x7c00);
  auto round_shift = [](uint32_t v, int shift) {
    const uint32_t half = 1u << (shift - 1), truncated = v >> shift, remainder = v & ((1u << shift) - 1);
    return remainder > half || (remainder == half && (truncated & 1)) ? truncated + 1 : truncated;
  };
  if (half_exponent <= 0) {
    if (half_exponent < -10) return static_cast<uint16_t>(sign);
    mantissa |= 0x800000;
    return static_cast<uint16_t>(sign | round_shift(mantissa, 14 - half_exponent));
  }
  return static_cast<uint16_t>(sign | ((static_cast<uint32_t>(half_exponent) << 10) + round_shift(mantissa, 13)));
}

double f16_value(uint16_t bits) {
  const int exponent = (bits >> 10) & 31, mantissa = bits & 1023;
  const double sign = bits & 0x8000 ? -1.0 : 1.0;
  if (exponent == 0) return sign * mantissa * std::ldexp(1.0, -24);
  if (exponent == 31) return mantissa ? NAN : sign * INFINITY;
  return sign * (1024 + mantissa) * std::ldexp(1.0, exponent - 25);
}

// writeF16: the bytes, and the value they hold.
double write_f16(uint8_t* b, double value) {
  const uint16_t bits = f16_bits(value);
  b[0] = bits & 255;
  b[1] = bits >> 8;
  return f16_value(bits);
}

void affine_codes(const float* x, double min, double inverse, double nmax, double* l) {
  for (int i = 0; i < 32; i++) l[i] = std::max(0.0, std::min(nmax, nearest_int(inverse * (x[i] - min))));
}

double affine_error(const float* x, const double* w, const double* l, double scale, double min) {
  double e = 0;
  for (int i = 0; i < 32; i++) {
    const double diff = scale * l[i] + min - x[i];
    e += w[i] * (diff * diff);
  }
  return e;
}

// affineFit: weighted least-squares x ≈ scale·l − min over a small search of scales; returns (scale, −min).
void affine_fit(const float* x, const double* w, double nmax, double rmin, double rdelta, int steps, double* scale_out, double* min_out) {
  double min = 0, max = -INFINITY;
  for (int i = 0; i < 32; i++) {
    min = std::min(min, static_cast<double>(x[i]));
    max = std::max(max, static_cast<double>(x[i]));
  }
  if (max == min) {
    *scale_out = 0;
    *min_out = -min;
    return;
  }
  double l[32];
  double scale = (max - min) / nmax;
  affine_codes(x, min, 1 / scale, nmax, l);
  double best = affine_error(x, w, l, scale, min);
  double sum_w = 0, sum_x = 0;
  for (int i = 0; i < 32; i++) {
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  for (int step = 0; step <= steps; step++) {
    affine_codes(x, min, (rmin + rdelta * step + nmax) / (max - min), nmax, l);
    double sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < 32; i++) {
      sum_l += w[i] * l[i];
      sum_l2 += w[i] * l[i] * l[i];
      sum_xl += w[i] * l[i] * x[i];
    }
    const double D = sum_w * sum_l2 - sum_l * sum_l;
    if (D <= 0) continue;
    double this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    double this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    const double e = affine_error(x, w, l, this_scale, this_min);
    if (e < best) {
      best = e;
      scale = this_scale;
      min = this_min;
    }
  }
  *scale_out = scale;
  *min_out = -min;
}

void pack_scales_mins(uint8_t* b, const int* scales, const int* mins) {
  std::memset(b, 0, 12);
  for (int j = 0; j < 8; j++) {
    if (j < 4) {
      b[j] = static_cast<uint8_t>(scales[j]);
      b[j + 4] = static_cast<uint8_t>(mins[j]);
    } else {
      b[j + 4] = static_cast<uint8_t>((scales[j] & 15) | ((mins[j] & 15) << 4));
      b[j - 4] |= static_cast<uint8_t>((scales[j] >> 4) << 6);
      b[j] |= static_cast<uint8_t>((mins[j] >> 4) << 6);
    }
  }
}

void pack_nibbles(uint8_t* b, const uint8_t* codes) {
  for (int j = 0; j < 4; j++)
    for (int l = 0; l < 32; l++) b[32 * j + l] = static_cast<uint8_t>((codes[64 * j + l] & 15) | ((codes[64 * j + 32 + l] & 15) << 4));
}

void quantize_k_block(const float* x, uint8_t* b, int nmax) {
  double scales[8], mins[8];
  for (int j = 0; j < 8; j++) {
    const float* sub = x + 32 * j;
    double sum_sq = 0;
    for (int i = 0; i < 32; i++) sum_sq += static_cast<double>(sub[i]) * sub[i];
    const double rms = std::sqrt(sum_sq / 32);
    double weights[32];
    for (int i = 0; i < 32; i++) weights[i] = rms + std::fabs(static_cast<double>(sub[i]));
    if (nmax == 15) affine_fit(sub, weights, nmax, -1, 0.1, 20, &scales[j], &mins[j]);
    else affine_fit(sub, weights, nmax, -0.5, 0.1, 15, &scales[j], &mins[j]);
  }
  double max_scale = -INFINITY, max_min = -INFINITY;
  for (int j = 0; j < 8; j++) {
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  int scale_codes[8], min_codes[8];
  for (int j = 0; j < 8; j++) {
    scale_codes[j] = max_scale > 0 ? static_cast<int>(std::min(63.0, nearest_int((63 / max_scale) * scales[j]))) : 0;
    min_codes[j] = max_min > 0 ? static_cast<int>(std::min(63.0, nearest_int((63 / max_min) * mins[j]))) : 0;
  }
  const double d = write_f16(b, max_scale / 63);
  const double dmin = write_f16(b + 2, max_min / 63);
  pack_scales_mins(b + 4, scale_codes, min_codes);
  uint8_t codes[256] = {0};
  for (int j = 0; j < 8; j++) {
    const double step = static_cast<float>(d * scale_codes[j]);
    if (step == 0) continue;
    const double offset = static_cast<float>(dmin * min_codes[j]);
    for (int l = 0; l < 32; l++) codes[32 * j + l] = static_cast<uint8_t>(std::max(0.0, std::min(static_cast<double>(nmax), nearest_int((x[32 * j + l] + offset) / step))));
  }
  if (nmax == 15) {
    pack_nibbles(b + 16, codes);
  } else {
    uint8_t* qh = b + 16;
    std::memset(qh, 0, 32);
    for (int j = 0; j < 4; j++) {
      for (int l = 0; l < 32; l++) {
        if (codes[64 * j + l] > 15) qh[l] |= static_cast<uint8_t>(1 << (2 * j));
        if (codes[64 * j + 32 + l] > 15) qh[l] |= static_cast<uint8_t>(2 << (2 * j));
      }
    }
    pack_nibbles(b + 48, codes);
  }
}

// symmetricFit: a symmetric scale for codes in [−nmax, nmax−1], refined by an x²-weighted search.
double symmetric_fit(const float* x, double nmax) {
  double max = 0;
  for (int i = 0; i < 16; i++)
    if (std::fabs(static_cast<double>(x[i])) > std::fabs(max)) max = x[i];
  if (std::fabs(max) < 1e-15) return 0;
  auto fit = [&](double inverse, double* sum_lx, double* sum_l2) {
    *sum_lx = 0;
    *sum_l2 = 0;
    for (int i = 0; i < 16; i++) {
      const double v = x[i];
      const double l = std::max(-nmax, std::min(nmax - 1, nearest_int(inverse * v)));
      *sum_lx += v * v * v * l;
      *sum_l2 += v * v * l * l;
    }
  };
  double sum_lx, sum_l2;
  fit(-nmax / max, &sum_lx, &sum_l2);
  double scale = sum_l2 != 0 ? sum_lx / sum_l2 : 0;
  double best = scale * sum_lx;
  for (int step = -9; step <= 9; step++) {
    if (step == 0) continue;
    fit(-(nmax + 0.1 * step) / max, &sum_lx, &sum_l2);
    if (sum_l2 > 0 && sum_lx * sum_lx > best * sum_l2) {
      scale = sum_lx / sum_l2;
      best = (sum_lx / sum_l2) * sum_lx;
    }
  }
  return scale;
}

void quantize_q6k_block(const float* x, uint8_t* b) {
  double scales[16];
  double max_scale = 0;
  for (int j = 0; j < 16; j++) {
    scales[j] = symmetric_fit(x + 16 * j, 32);
    if (std::fabs(scales[j]) > std::fabs(max_scale)) max_scale = scales[j];
  }
  if (max_scale == 0) {
    std::memset(b, 0, 210);
    return;
  }
  uint8_t codes[256];
  const double inverse = -128 / max_scale;
  const double d = write_f16(b + 208, 1 / inverse);
  for (int j = 0; j < 16; j++) {
    const int code = static_cast<int>(std::min(127.0, nearest_int(inverse * scales[j])));
    b[192 + j] = static_cast<uint8_t>(code & 255);
    const double step = static_cast<float>(d * code);
    for (int l = 0; l < 16; l++) {
      codes[16 * j + l] = step != 0 ? static_cast<uint8_t>(std::max(-32.0, std::min(31.0, nearest_int(x[16 * j + l] / step))) + 32) : 32;
    }
  }
  for (int half = 0; half < 2; half++) {
    uint8_t* ql = b + 64 * half;
    uint8_t* qh = b + 128 + 32 * half;
    const uint8_t* c = codes + 128 * half;
    for (int l = 0; l < 32; l++) {
      const int q1 = c[l], q2 = c[l + 32], q3 = c[l + 64], q4 = c[l + 96];
      ql[l] = static_cast<uint8_t>((q1 & 15) | ((q3 & 15) << 4));
      ql[l + 32] = static_cast<uint8_t>((q2 & 15) | ((q4 & 15) << 4));
      qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
  }
}

}  // namespace

bool quantize_k(KQuant type, const float* x, size_t blocks, uint8_t* out) {
  const size_t bytes = type == KQuant::Q4K ? 144 : type == KQuant::Q5K ? 176 : 210;
  pool().parallel_for(blocks, [&](size_t b0, size_t b1) {
    for (size_t block = b0; block < b1; block++) {
      const float* values = x + 256 * block;
      uint8_t* dst = out + bytes * block;
      if (type == KQuant::Q6K) quantize_q6k_block(values, dst);
      else quantize_k_block(values, dst, type == KQuant::Q4K ? 15 : 31);
    }
  });
  return true;
}

}  // namespace olmoe
