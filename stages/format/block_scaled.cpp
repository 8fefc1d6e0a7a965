#include "stages/format/block_scaled.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels/error.hpp"
#include "kernels/lanes.hpp"
#include "kernels/numerics.hpp"

namespace quantflow {
namespace {

std::int64_t roundup(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }
std::int64_t block_of(QuantFormat format) { return format == QuantFormat::Mxfp8 ? 32 : 16; }
// The padding unit of the weight along both dimensions (32 for mxfp8, 16 for nvfp4).
std::int64_t pad_of(QuantFormat format) { return block_of(format); }

struct Grid {
    std::int64_t rows_padded, cols_padded;  // the weight's padded shape
    std::int64_t scale_rows, scale_cols;    // logical scale grid: padded rows x padded K / block
    std::int64_t stored_rows, stored_cols;  // swizzled tensor
};

Grid grid_of(QuantFormat format, std::int64_t rows, std::int64_t cols) {
    QF_EXPECT(is_block_scaled(format), "internal: block_scaled layout asked for " + std::string(format_label(format)));
    Grid g{};
    g.rows_padded = roundup(rows, pad_of(format));
    g.cols_padded = roundup(cols, pad_of(format));
    g.scale_rows = g.rows_padded;
    g.scale_cols = g.cols_padded / block_of(format);
    g.stored_rows = roundup(rows, 128);
    g.stored_cols = roundup(g.scale_cols, 4);
    return g;
}

// The stored bytes of n block scales, one loop per format so both vectorise (perf: the scalar f32_to_e4m3 was 5%
// of an nvfp4 --simple run). nvfp4 scales are e4m3 values <= 448, where e4m3_lane is f32_to_e4m3 (exact); an
// mxfp8 scale 2^(byte - 127) has its byte as exponent bits, and 0 (byte 0) has none.
void scale_bytes(QuantFormat format, const float* scales, std::int64_t n, std::uint8_t* __restrict out) {
    if (format == QuantFormat::Nvfp4)
        for (std::int64_t c = 0; c < n; ++c) out[c] = e4m3_lane(scales[c]);
    else
        for (std::int64_t c = 0; c < n; ++c) out[c] = static_cast<std::uint8_t>(f32_bits(scales[c]) >> 23);
}

float scale_value(QuantFormat format, std::uint8_t byte) {
    return format == QuantFormat::Nvfp4 ? e4m3_to_f32(byte) : e8m0_to_f32(byte);
}

// out[i] = codes[2i] << 4 | codes[2i + 1] (low nibbles) for i < pairs; a loop of its own so it vectorises (perf:
// inside the row lambda it did not, and was 8% of an nvfp4 --simple run).
void pack_nibbles(const std::uint8_t* __restrict codes, std::int64_t pairs, std::uint8_t* __restrict out) {
    for (std::int64_t i = 0; i < pairs; ++i)
        out[i] = static_cast<std::uint8_t>((codes[2 * i] & 0x0Fu) << 4 | (codes[2 * i + 1] & 0x0Fu));
}

}  // namespace

std::int64_t swizzled_offset(std::int64_t r, std::int64_t c, std::int64_t cols_padded) {
    return ((r / 128) * (cols_padded / 4) + c / 4) * 512 + (r % 32) * 16 + ((r % 128) / 32) * 4 + (c % 4);
}

std::vector<std::int64_t> block_weight_shape(QuantFormat format, std::int64_t rows, std::int64_t cols) {
    const Grid g = grid_of(format, rows, cols);
    return {g.rows_padded, format == QuantFormat::Nvfp4 ? g.cols_padded / 2 : g.cols_padded};
}

std::vector<std::int64_t> block_scale_shape(QuantFormat format, std::int64_t rows, std::int64_t cols) {
    const Grid g = grid_of(format, rows, cols);
    return {g.stored_rows, g.stored_cols};
}

std::vector<std::uint8_t> pack_block_weight(const QuantizedTensor& q) {
    const Grid g = grid_of(q.spec.format, q.rows, q.cols);
    if (q.spec.format == QuantFormat::Mxfp8) {
        std::vector<std::uint8_t> out(static_cast<std::size_t>(g.rows_padded * g.cols_padded), 0);
        oneapi::tbb::parallel_for(std::int64_t{0}, q.rows, [&](std::int64_t r) {
            std::copy_n(q.codes.data() + r * q.cols, q.cols, out.data() + r * g.cols_padded);
        });
        return out;
    }
    // Rows in parallel, a byte per pair of codes (the even one high), the odd last code alone.
    const std::int64_t row_bytes = g.cols_padded / 2, pairs = q.cols / 2;
    std::vector<std::uint8_t> out(static_cast<std::size_t>(g.rows_padded * row_bytes), 0);
    oneapi::tbb::parallel_for(std::int64_t{0}, q.rows, [&](std::int64_t r) {
        const std::uint8_t* codes = q.codes.data() + r * q.cols;
        std::uint8_t* row = out.data() + r * row_bytes;
        pack_nibbles(codes, pairs, row);
        if (q.cols % 2 != 0) row[pairs] = static_cast<std::uint8_t>((codes[q.cols - 1] & 0x0Fu) << 4);
    });
    return out;
}

std::vector<std::uint8_t> pack_block_scales(const QuantizedTensor& q) {
    const Grid g = grid_of(q.spec.format, q.rows, q.cols);
    const std::int64_t blocks = scale_cols(q.spec, q.cols);  // == g.scale_cols: K padded to a block multiple
    std::vector<std::uint8_t> out(static_cast<std::size_t>(g.stored_rows * g.stored_cols), 0);
    oneapi::tbb::parallel_for(oneapi::tbb::blocked_range<std::int64_t>(0, q.rows), [&](const auto& range) {
        std::vector<std::uint8_t> bytes(static_cast<std::size_t>(blocks));
        for (std::int64_t r = range.begin(); r != range.end(); ++r) {  // every (r, c) has its own byte
            const float* scales = q.scales.data() + r * blocks;
            scale_bytes(q.spec.format, scales, blocks, bytes.data());
            // swizzled_offset(r, c) is the row's offset plus (c / 4) * 512 + c % 4: runs of 4 bytes (perf: the
            // per-scale offset call and store were 7% of an nvfp4 --simple run).
            std::uint8_t* base = out.data() + swizzled_offset(r, 0, g.stored_cols);
            for (std::int64_t c = 0; c < blocks; c += 4)
                std::memcpy(base + (c / 4) * 512, bytes.data() + c, static_cast<std::size_t>(std::min<std::int64_t>(4, blocks - c)));
        }
    });
    return out;
}

QuantizedTensor unpack_block_scaled(QuantFormat format, std::int64_t rows, std::int64_t cols, std::span<const std::byte> weight,
                                    std::span<const std::byte> scales, float global_scale) {
    const Grid g = grid_of(format, rows, cols);
    const auto wshape = block_weight_shape(format, rows, cols);
    const auto wbytes = static_cast<std::size_t>(wshape[0] * wshape[1]);
    const auto sbytes = static_cast<std::size_t>(g.stored_rows * g.stored_cols);
    QF_EXPECT(weight.size() == wbytes && scales.size() == sbytes,
              std::string(format_label(format)) + " weight [" + std::to_string(rows) + ", " + std::to_string(cols) + "] needs " +
                  std::to_string(wbytes) + " weight bytes and " + std::to_string(sbytes) + " scale bytes, the file has " +
                  std::to_string(weight.size()) + " and " + std::to_string(scales.size()));
    QuantizedTensor q;
    q.spec = {format, block_of(format)};
    q.rows = rows;
    q.cols = cols;
    q.global_scale = global_scale;
    q.codes.resize(static_cast<std::size_t>(rows * cols));
    const auto* w = reinterpret_cast<const std::uint8_t*>(weight.data());
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c) {
            std::uint8_t code;
            if (format == QuantFormat::Mxfp8) {
                code = w[r * g.cols_padded + c];
            } else {
                const std::uint8_t byte = w[r * (g.cols_padded / 2) + c / 2];
                code = c % 2 == 0 ? static_cast<std::uint8_t>(byte >> 4) : static_cast<std::uint8_t>(byte & 0x0Fu);
            }
            q.codes[static_cast<std::size_t>(r * cols + c)] = code;
        }
    const std::int64_t blocks = scale_cols(q.spec, cols);
    q.scales.resize(static_cast<std::size_t>(rows * blocks));
    const auto* s = reinterpret_cast<const std::uint8_t*>(scales.data());
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < blocks; ++c)
            q.scales[static_cast<std::size_t>(r * blocks + c)] = scale_value(format, s[swizzled_offset(r, c, g.stored_cols)]);
    return q;
}

}  // namespace quantflow
