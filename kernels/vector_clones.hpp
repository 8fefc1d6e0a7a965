// kernels/vector_clones.hpp: QF_VECTOR_CLONES marks a host hot loop to be compiled twice, for AVX2 and for
// baseline x86-64, and picked at load time (GCC ifunc). The build keeps -ffp-contract=off, so both clones
// compute the same bits. Not under sanitizers: the ifunc resolver runs before their runtime is up (TSan:
// SIGSEGV at load).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__) && !defined(__CUDACC__)
#define QF_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
// Loops written with std::fma: one fused multiply-add instruction on x86-64-v3 (AVX2 + FMA) and v4 (AVX-512), the
// C library's correctly rounded fmaf on older machines — the same bits on all three, only slower on the last.
#define QF_FMA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
// A loop compiled for AVX-512 with 16 lanes (a target_clones clone keeps generic tuning's 8), called where
// cpu_has_avx512() (kernels/cpu/code_gather_cpu.hpp) beside a portable twin of the same bits.
#define QF_AVX512_WIDE __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")))
#else
#define QF_VECTOR_CLONES
#define QF_FMA_CLONES
#endif

// Functions written with AVX-512 intrinsics (gathers, compress), called where cpu_has_avx512() beside portable
// twins of the same bits. Unlike the clones these need no ifunc, so they stay under the sanitizers and clang.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#define QF_AVX512_INTRINSICS __attribute__((target("avx512f,avx512dq")))
#endif
