// kernels/convrot.hpp: ConvRot's group-wise Hadamard rotation (notes/comfyui-new-formats.md 6-7).
//
// H_G = (H4 (x) H4 (x) ... (x) H4) / sqrt(G) for G = 4^n, with the regular H4 = [[1,1,1,-1],[1,1,-1,1],
// [1,-1,1,1],[-1,1,1,1]]. H_G is symmetric and orthogonal (H_G * H_G = I), so the same transform rotates a
// weight (W_rot = W * H_G^T per group of G input columns) and rotates it back (W = W_rot * H_G).
//
// The transform is a radix-4 butterfly over the n base-4 digits of the index, in double precision, in one fixed
// order, then one exact multiplication by 2^-n and one rounding to float32: the CPU and the GPU (both call
// hadamard_group) give the same bits. comfy-kitchen rotates with a float32 matmul, so its rotated values can
// differ from these in the last bits (a code flips where a value sits on a rounding boundary).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/numerics.hpp"

namespace quantflow {

// Whether G is a group size ConvRot accepts: 4, 16, 64, 256, 1024, ... (comfy-kitchen raises otherwise).
constexpr bool convrot_group_valid(std::int64_t g) {
    if (g < 4) return false;
    while (g % 4 == 0) g /= 4;
    return g == 1;
}

// Largest group size the rotation supports (the GPU keeps a group in 48 KiB of shared memory as doubles).
inline constexpr std::int64_t kMaxConvrotGroup = 4096;

// H4 applied to (a0, a1, a2, a3), in place: the rows of the regular H4 above.
QF_HOST_DEVICE void hadamard4(double& a0, double& a1, double& a2, double& a3) {
    const double y0 = a0 + a1 + a2 - a3;
    const double y1 = a0 + a1 - a2 + a3;
    const double y2 = a0 - a1 + a2 + a3;
    const double y3 = -a0 + a1 + a2 + a3;
    a0 = y0;
    a1 = y1;
    a2 = y2;
    a3 = y3;
}

// One butterfly stage of stride s over x[0..g): quad q (0 <= q < g/4) covers base + {0, s, 2s, 3s}, where base
// spreads q's digits around the digit of weight s. The GPU runs the quads of a stage in parallel; the CPU in
// order: each quad touches its own four elements, so the result is the same.
QF_HOST_DEVICE void hadamard_quad(double* x, std::int64_t s, std::int64_t q) {
    const std::int64_t base = (q / s) * 4 * s + q % s;
    hadamard4(x[base], x[base + s], x[base + 2 * s], x[base + 3 * s]);
}

// The normalisation 1/sqrt(g) = 2^-n, exact in double.
QF_HOST_DEVICE double hadamard_norm(std::int64_t g) {
    double f = 1.0;
    for (std::int64_t t = g; t > 1; t /= 4) f *= 0.5;
    return f;
}

// x[0..g) = H_g * x[0..g) in place (g a valid group size).
inline void hadamard_group(double* x, std::int64_t g) {
    for (std::int64_t s = 1; s < g; s *= 4)
        for (std::int64_t q = 0; q < g / 4; ++q) hadamard_quad(x, s, q);
    const double f = hadamard_norm(g);
    for (std::int64_t i = 0; i < g; ++i) x[i] *= f;
}

// row[0..cols) = each group of g consecutive values rotated by H_g (cols a multiple of g); scratch holds g doubles.
void rotate_row_groups(float* row, std::int64_t cols, std::int64_t g, double* scratch);

// "--convrot_group_size 128 is not a power of 4 (4, 16, 64, 256, 1024, 4096)", or empty when g is usable.
std::string convrot_group_problem(std::int64_t g);

}  // namespace quantflow
