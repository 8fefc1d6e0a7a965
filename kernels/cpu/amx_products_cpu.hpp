// kernels/cpu/amx_products_cpu.hpp: the randomized SVD's two products with a bf16 weight on Intel AMX (the tile
// matrix unit of Sapphire Rapids and later: 16 x 32 bf16 tiles, products summed in float32), taken by the CPU's
// sketch panels (svd_cpu.cpp) in place of gemm_nn and gemm_tn (dense_cpu.cpp) where the CPU and the kernel allow.
//
// The float sketch columns are split into two bf16 parts, x = hi + lo (hi = bf16(x), lo = bf16(x - hi)), and both
// are multiplied: W is exact in bf16, so the products carry about 16 bits of x where float carries 24 (relative
// error 2.4-2.9e-6 against the float loops, tests/test_amx_products.cpp). On a 5120 x 5120 bf16 weight, 32 columns,
// one core: W Z 31 -> 14 ms, W^T Y 37 -> 22 ms, where streaming the weight once takes 5.7 ms.
//
// Results do not depend on the thread count (fixed bands, sums in a fixed order), but they differ in the last bits
// from the float loops: a machine with AMX and one without convert to slightly different bytes. QF_CPU_AMX=0 in the
// environment turns the tiles off.
#pragma once

#include <cstdint>

#include "kernels/quant_types.hpp"

namespace quantflow {

// The CPU has AMX-BF16, the kernel grants the tile state, and QF_CPU_AMX is not 0 (asked once per process).
bool amx_usable();

// Whether a weight can take the tiles: bf16, both sides multiples of 32.
bool amx_fits(const TensorView& w);

// c [m, p] = W b, b [n, p] (gemm_nn's contract); W must fit.
void gemm_nn_amx(const TensorView& w, const float* b, std::int64_t p, float* c);

// c [n, p] = W^T b, b [m, p] (gemm_tn's contract); W must fit.
void gemm_tn_amx(const TensorView& w, const float* b, std::int64_t p, float* c);

}  // namespace quantflow
