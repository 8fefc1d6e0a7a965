#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/cpu/code_gather_cpu.hpp"
#include "kernels/cpu/cpu_backend.hpp"
#include "kernels/lanes.hpp"
#include "kernels/error.hpp"
#include "kernels/numerics.hpp"

namespace quantflow {
namespace {

// Rows are processed in parallel in chunks big enough to amortise task overhead (~256 KiB of input).
std::int64_t rows_per_task(std::int64_t cols) { return std::max<std::int64_t>(1, (1 << 17) / std::max<std::int64_t>(cols, 1)); }

}  // namespace

// Kept as tight loops per dtype so the compiler vectorises them.
QF_VECTOR_CLONES void decode_row_cpu(const TensorView& w, std::int64_t row, std::int64_t col0, std::int64_t n, float* out) {
    const std::size_t offset = static_cast<std::size_t>(row * w.cols + col0);
    switch (w.dtype) {
        case DType::BF16: {
            const auto* p = reinterpret_cast<const std::uint16_t*>(w.data) + offset;
            for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(p[i]);
            break;
        }
        case DType::F16: {
            const auto* p = reinterpret_cast<const std::uint16_t*>(w.data) + offset;
            for (std::int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(p[i]);
            break;
        }
        default: std::memcpy(out, reinterpret_cast<const float*>(w.data) + offset, static_cast<std::size_t>(n) * 4);
    }
}

QF_VECTOR_CLONES std::uint32_t max_abs_bits(const float* x, std::int64_t n) { return max_abs_bits_inline(x, n); }

namespace {

[[noreturn]] void throw_non_finite(std::string_view name, const TensorView& w, std::int64_t row) {
    throw Error("tensor '" + std::string(name) + "' [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                "] holds NaN or Inf in row " + std::to_string(row) + "; refusing to quantize it");
}

// Division, round half to even, clamp to +-top (127, or 7 for int4; spec 5.2). |x / step| <= top (+ rounding),
// so the magic-number rounding is exact, and the clamp runs on integers where it vectorises.
QF_VECTOR_CLONES void encode_int8(const float* x, std::int64_t n, float step, std::int32_t top, std::uint8_t* out) {
    for (std::int64_t i = 0; i < n; ++i) {
        std::int32_t r = static_cast<std::int32_t>(round_half_even_small(x[i] / step));
        r = r < -top ? -top : r;
        r = r > top ? top : r;
        out[i] = static_cast<std::uint8_t>(r);
    }
}

void encode_block(QuantFormat format, const float* x, std::int64_t n, float amax, std::uint8_t* out) {
    if (format == QuantFormat::Fp8E5m2Tensor) {
        const float m = encode_factor(format, amax);
        for (std::int64_t i = 0; i < n; ++i) out[i] = f32_to_e5m2(clamp_abs(x[i] * m, kE5m2Max));
    } else if (is_fp8(format))
        encode_fp8_cpu(x, n, encode_factor(format, amax), out);
    else
        encode_int8(x, n, encode_factor(format, amax), int_code_max(format), out);
}

// Largest |x| of a row straight from its stored bits: for 16-bit floats the order of the magnitude bits is
// the order of the values, so no float decode is needed. Returns float32 bits; >= 0x7F800000 means NaN/Inf.
QF_VECTOR_CLONES std::uint32_t row_max_abs_bits(const TensorView& w, std::int64_t row) {
    const std::size_t offset = static_cast<std::size_t>(row * w.cols);
    if (w.dtype == DType::F32) return max_abs_bits(reinterpret_cast<const float*>(w.data) + offset, w.cols);
    const auto* p = reinterpret_cast<const std::uint16_t*>(w.data) + offset;
    std::uint16_t m = 0;
    for (std::int64_t i = 0; i < w.cols; ++i) {
        const std::uint16_t u = p[i] & 0x7FFFu;
        m = u > m ? u : m;
    }
    if (w.dtype == DType::BF16) return static_cast<std::uint32_t>(m) << 16;
    return m >= 0x7C00u ? 0x7F800000u : f32_bits(f16_to_f32(m));
}

// Per-tensor amax, parallel over row chunks (max is exact, so the result is thread-count independent).
float tensor_amax(std::string_view name, const TensorView& w) {
    const std::int64_t chunk = rows_per_task(w.cols);
    std::vector<std::uint32_t> partial(static_cast<std::size_t>((w.rows + chunk - 1) / chunk), 0);
    oneapi::tbb::parallel_for(std::int64_t{0}, static_cast<std::int64_t>(partial.size()), [&](std::int64_t t) {
        std::uint32_t m = 0;
        for (std::int64_t r = t * chunk; r < std::min(w.rows, (t + 1) * chunk); ++r) {
            const std::uint32_t rm = row_max_abs_bits(w, r);
            if (rm >= 0x7F800000u) throw_non_finite(name, w, r);
            m = std::max(m, rm);
        }
        partial[static_cast<std::size_t>(t)] = m;
    });
    return bits_f32(*std::max_element(partial.begin(), partial.end()));
}

// Tensor-wise: one amax, one scale.
void quantize_tensorwise(std::string_view name, const TensorView& w, QuantFormat format, QuantizedTensor& q) {
    const float amax = tensor_amax(name, w);
    q.scales.assign(1, stored_scale(format, amax));
    const std::int64_t chunk = rows_per_task(w.cols);
    oneapi::tbb::parallel_for(std::int64_t{0}, (w.rows + chunk - 1) / chunk, [&](std::int64_t t) {
        std::vector<float> row(static_cast<std::size_t>(w.cols));
        for (std::int64_t r = t * chunk; r < std::min(w.rows, (t + 1) * chunk); ++r) {
            decode_row_cpu(w, r, 0, w.cols, row.data());
            encode_block(format, row.data(), w.cols, amax, q.codes.data() + r * w.cols);
        }
    });
}

// Row and 1 x bs group formats: every scale depends on one row only.
void quantize_rowgroups(std::string_view name, const TensorView& w, QuantFormat format, std::int64_t group, QuantizedTensor& q) {
    const std::int64_t groups = w.cols / group;
    q.scales.assign(static_cast<std::size_t>(w.rows * groups), 0.0f);
    const std::int64_t chunk = rows_per_task(w.cols);
    oneapi::tbb::parallel_for(std::int64_t{0}, (w.rows + chunk - 1) / chunk, [&](std::int64_t t) {
        std::vector<float> row(static_cast<std::size_t>(w.cols));
        for (std::int64_t r = t * chunk; r < std::min(w.rows, (t + 1) * chunk); ++r) {
            decode_row_cpu(w, r, 0, w.cols, row.data());
            for (std::int64_t g = 0; g < groups; ++g) {
                const float* x = row.data() + g * group;
                const std::uint32_t bits = max_abs_bits(x, group);
                if (bits >= 0x7F800000u) throw_non_finite(name, w, r);
                const float amax = bits_f32(bits);
                q.scales[static_cast<std::size_t>(r * groups + g)] = stored_scale(format, amax);
                encode_block(format, x, group, amax, q.codes.data() + r * w.cols + g * group);
            }
        }
    });
}

// bs x bs tiles: one task per band of bs rows.
void quantize_tiles(std::string_view name, const TensorView& w, QuantFormat format, std::int64_t bs, QuantizedTensor& q) {
    const std::int64_t tile_rows = w.rows / bs, tile_cols = w.cols / bs;
    q.scales.assign(static_cast<std::size_t>(tile_rows * tile_cols), 0.0f);
    oneapi::tbb::parallel_for(std::int64_t{0}, tile_rows, [&](std::int64_t tr) {
        std::vector<float> band(static_cast<std::size_t>(bs * w.cols));
        for (std::int64_t r = 0; r < bs; ++r) decode_row_cpu(w, tr * bs + r, 0, w.cols, band.data() + r * w.cols);
        for (std::int64_t tc = 0; tc < tile_cols; ++tc) {
            std::uint32_t bits = 0;
            for (std::int64_t r = 0; r < bs; ++r) bits = std::max(bits, max_abs_bits(band.data() + r * w.cols + tc * bs, bs));
            if (bits >= 0x7F800000u) throw_non_finite(name, w, tr * bs);
            const float amax = bits_f32(bits);
            q.scales[static_cast<std::size_t>(tr * tile_cols + tc)] = stored_scale(format, amax);
            for (std::int64_t r = 0; r < bs; ++r)
                encode_block(format, band.data() + r * w.cols + tc * bs, bs, amax,
                             q.codes.data() + (tr * bs + r) * w.cols + tc * bs);
        }
    });
}


}  // namespace

// One e4m3_lane per element (kernels/lanes.hpp), vectorised.
namespace {

QF_VECTOR_CLONES void encode_fp8_portable(const float* x, std::int64_t n, float multiplier, std::uint8_t* out) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = e4m3_lane(x[i] * multiplier);
}

#ifdef QF_AVX512_WIDE
QF_AVX512_WIDE void encode_fp8_avx512(const float* x, std::int64_t n, float multiplier, std::uint8_t* out) {
    for (std::int64_t i = 0; i < n; ++i) out[i] = e4m3_lane(x[i] * multiplier);
}
#endif

}  // namespace

void encode_fp8_cpu(const float* x, std::int64_t n, float multiplier, std::uint8_t* out, bool portable) {
#ifdef QF_AVX512_WIDE
    if (!portable && cpu_has_avx512()) return encode_fp8_avx512(x, n, multiplier, out);
#endif
    (void)portable;
    encode_fp8_portable(x, n, multiplier, out);
}

QuantizedTensor quantize_cpu(std::string_view name, const TensorView& w, const QuantSpec& spec) {
    QF_EXPECT(format_fits(spec, w.rows, w.cols),
              "tensor '" + std::string(name) + "' [" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                  "] does not fit " + std::string(format_label(spec.format)) + " with block size " +
                  std::to_string(spec.block_size));
    QuantizedTensor q;
    q.spec = spec;
    q.rows = w.rows;
    q.cols = w.cols;
    q.codes.resize(static_cast<std::size_t>(w.rows * w.cols));
    const QuantFormat format = spec.format;
    switch (spec.format) {
        case QuantFormat::Fp8Tensor:
        case QuantFormat::Fp8E5m2Tensor:
        case QuantFormat::Int8Tensor: quantize_tensorwise(name, w, format, q); break;
        case QuantFormat::Mxfp8:
        case QuantFormat::Nvfp4:
            quantize_block_scaled_cpu(name, w, q, format == QuantFormat::Nvfp4 ? tensor_amax(name, w) : 0.0f);
            return q;  // zero blocks already follow the format's own rule
        case QuantFormat::Fp8Row:
        case QuantFormat::Int8Row: quantize_rowgroups(name, w, format, w.cols, q); break;
        case QuantFormat::Int8ConvRot:
        case QuantFormat::W4a4ConvRot:
            quantize_rowgroups(name, w, format, w.cols, q);  // w is the rotated weight (Backend::rotate_groups)
            return q;  // comfy-kitchen's floors (1e-30, 1e-10 / 7) are the scales of zero rows
        case QuantFormat::Fp8Block:
        case QuantFormat::Int8Lode: quantize_rowgroups(name, w, format, spec.block_size, q); break;
        case QuantFormat::Fp8Block2d:
        case QuantFormat::Int8Block: quantize_tiles(name, w, format, spec.block_size, q); break;
    }
    // The reference stores scale 1.0 everywhere for an all-zero weight (fixture zero.proj); codes are 0.
    if (all_codes_zero(q) && tensor_amax(name, w) == 0.0f) std::fill(q.scales.begin(), q.scales.end(), 1.0f);
    return q;
}

}  // namespace quantflow
