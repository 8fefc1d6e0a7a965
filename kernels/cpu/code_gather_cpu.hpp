// kernels/cpu/code_gather_cpu.hpp: loops that read a 256-entry table by code, written for AVX-512 by hand (GCC's
// generic tuning makes no gathers, so such a loop stays scalar: perf put round_offsets' lookup at 4.6% of a 2-core
// default run). Each has a portable twin that computes the same bits; the AVX-512 one runs where the CPU has
// avx512f and avx512dq, and `portable` forces the twin (tests).
#pragma once

#include <cstdint>

namespace quantflow {

bool cpu_has_avx512();

// x[c] += table[codes[c]] for c < n (float).
void add_code_values(const float* table, const std::uint8_t* codes, std::int64_t n, float* x, bool portable = false);

// e[c] = double(table[codes[c]]) * d[c] - w[c] for c < n, in double.
void code_errors_f64(const float* table, const std::uint8_t* codes, const float* d, const float* w, std::int64_t n, double* e,
                     bool portable = false);

}  // namespace quantflow
