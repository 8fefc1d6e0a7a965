#include "kernels/cpu/amx_products_cpu.hpp"

#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kernels/cpu/dense_cpu.hpp"
#include "kernels/numerics.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#define QF_HAVE_AMX_CODE 1
#define QF_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw")))
#endif

namespace quantflow {
namespace {

constexpr std::int64_t kChunk = 32;  // sketch columns per pass over the weight: two tiles of 16
constexpr std::int64_t kTileBf16 = 16 * 32;
constexpr std::int64_t kBandCols = 1024;  // gemm_tn: columns per task (runs of 2 KB per row)

// hi and lo bf16 parts of x.
inline void split(float x, std::uint16_t& hi, std::uint16_t& lo) {
    hi = f32_to_bf16(x);
    lo = f32_to_bf16(x - bf16_to_f32(hi));
}

// b's columns [t0, t0 + 32) of b [rows, p] (zero past p), packed per block of 32 rows as the tiles the products
// read: 4 tiles per block (part hi/lo, half of the 32 columns), each 16 x 32 bf16.
//  pairs = true (gemm_nn's B, VNNI): tile row i holds (b[2i, j], b[2i + 1, j]) for the half's 16 columns j.
//  pairs = false (gemm_tn's A = b^T): tile row i is column j = i of the half, over the block's 32 rows.
std::vector<std::uint16_t> pack(const float* b, std::int64_t rows, std::int64_t p, std::int64_t t0, bool pairs) {
    const std::int64_t blocks = rows / 32;
    std::vector<std::uint16_t> out(static_cast<std::size_t>(blocks * 4 * kTileBf16));
    for (std::int64_t kb = 0; kb < blocks; ++kb)
        for (std::int64_t t = 0; t < 32; ++t)
            for (std::int64_t jj = 0; jj < kChunk; ++jj) {
                const float x = t0 + jj < p ? b[(kb * 32 + t) * p + t0 + jj] : 0.0f;
                std::uint16_t hi = 0, lo = 0;
                split(x, hi, lo);
                const std::int64_t h = jj / 16, j = jj % 16;
                const std::int64_t at = pairs ? (t / 2) * 32 + 2 * j + (t % 2) : j * 32 + t;
                out[static_cast<std::size_t>(((kb * 2 + 0) * 2 + h) * kTileBf16 + at)] = hi;
                out[static_cast<std::size_t>(((kb * 2 + 1) * 2 + h) * kTileBf16 + at)] = lo;
            }
    return out;
}

#ifdef QF_HAVE_AMX_CODE

// GCC 12's tile load and store intrinsics are asm statements that name no memory: a buffer written only for a tile
// load looks dead, and one read after a tile store looks unwritten. This barrier orders both.
#define QF_TILE_MEMORY() __asm__ volatile("" ::: "memory")

struct alignas(64) TileConfig {
    std::uint8_t palette = 1, start_row = 0;
    std::uint8_t reserved[14] = {};
    std::uint16_t colsb[16] = {};
    std::uint8_t rows[16] = {};
};

// Every tile 16 rows of 64 bytes: C (16 x 16 float), A (16 x 32 bf16) and B (16 pairs x 16 columns).
QF_AMX void configure_tiles() {
    TileConfig c;
    for (int t = 0; t < 8; ++t) {
        c.colsb[t] = 64;
        c.rows[t] = 16;
    }
    // Our own ldtilecfg: GCC 12's _tile_loadconfig names only the first 8 bytes of the config as read, so the
    // stores of the columns and rows were dropped as dead and the first tile instruction faulted (SIGILL).
    __asm__ volatile("ldtilecfg %0" : : "m"(c));
}

// Rows [r, r + 32) of c = W x for the packed chunk: tiles 0-3 sum (row half, column half), 4-5 hold W's rows,
// 6-7 the packed parts.
QF_AMX void nn_rows(const std::uint16_t* w, std::int64_t n, const std::uint16_t* packed, std::int64_t r, float* c, std::int64_t p,
                    std::int64_t t0) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    const std::uint16_t* a0 = w + r * n;
    const std::uint16_t* a1 = w + (r + 16) * n;
    const auto stride = static_cast<long>(n * 2);
    for (std::int64_t kb = 0; kb < n / 32; ++kb) {
        const std::uint16_t* t = packed + kb * 4 * kTileBf16;
        _tile_loadd(4, a0 + kb * 32, stride);
        _tile_loadd(5, a1 + kb * 32, stride);
        _tile_loadd(6, t, 64);                  // hi, columns 0-15
        _tile_loadd(7, t + kTileBf16, 64);      // hi, columns 16-31
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
        _tile_loadd(6, t + 2 * kTileBf16, 64);  // lo, columns 0-15
        _tile_loadd(7, t + 3 * kTileBf16, 64);  // lo, columns 16-31
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
    }
    alignas(64) float out[4][16 * 16];
    _tile_stored(0, out[0], 64);
    _tile_stored(1, out[1], 64);
    _tile_stored(2, out[2], 64);
    _tile_stored(3, out[3], 64);
    QF_TILE_MEMORY();
    const std::int64_t width = std::min(kChunk, p - t0);
    for (int q = 0; q < 4; ++q)
        for (std::int64_t i = 0; i < 16; ++i)
            for (std::int64_t j = 0; j < 16 && (q % 2) * 16 + j < width; ++j)
                c[(r + (q / 2) * 16 + i) * p + t0 + (q % 2) * 16 + j] = out[q][i * 16 + j];
}

// Columns [c0, c0 + width) of c = W^T y for the packed chunk (width a multiple of 32, at most kBandCols). Each block
// of 32 rows is read once, as contiguous runs of the band's width per row (a band of 32 read 64 bytes per row per
// block and ran at a third of the speed); its four packed tiles stay in tiles 0-3 while tiles 4-5 take W's rows
// interleaved in pairs (the B layout) for each 32 columns, and 6-7 the sums of those columns, kept in `sums`
// (L2) between blocks.
QF_AMX void tn_band(const std::uint16_t* w, std::int64_t m, std::int64_t n, const std::uint16_t* packed, std::int64_t c0,
                    std::int64_t width, float* sums, float* c, std::int64_t p, std::int64_t t0) {
    const std::int64_t blocks16 = width / 16;  // sums: [chunk half][16 columns][16 x 16 floats]
    std::fill_n(sums, 2 * blocks16 * 256, 0.0f);
    alignas(64) std::uint16_t b[2][kTileBf16];
    // Output lane 2j takes the first row's column j, lane 2j + 1 the second row's (offset 32 in the pair).
    alignas(64) std::uint16_t first[32], second[32];
    for (int j = 0; j < 16; ++j) {
        first[2 * j] = static_cast<std::uint16_t>(j);
        first[2 * j + 1] = static_cast<std::uint16_t>(32 + j);
        second[2 * j] = static_cast<std::uint16_t>(16 + j);
        second[2 * j + 1] = static_cast<std::uint16_t>(48 + j);
    }
    const __m512i lo_idx = _mm512_load_si512(first), hi_idx = _mm512_load_si512(second);
    QF_TILE_MEMORY();
    for (std::int64_t kb = 0; kb < m / 32; ++kb) {
        const std::uint16_t* t = packed + kb * 4 * kTileBf16;
        _tile_loadd(0, t, 64);                  // hi, chunk columns 0-15
        _tile_loadd(1, t + 2 * kTileBf16, 64);  // lo, chunk columns 0-15
        _tile_loadd(2, t + kTileBf16, 64);      // hi, chunk columns 16-31
        _tile_loadd(3, t + 3 * kTileBf16, 64);  // lo, chunk columns 16-31
        const std::uint16_t* rows = w + kb * 32 * n + c0;
        for (std::int64_t s = 0; s < width / 32; ++s) {
            for (int i = 0; i < 16; ++i) {
                const __m512i x = _mm512_loadu_si512(rows + 2 * i * n + s * 32), y = _mm512_loadu_si512(rows + (2 * i + 1) * n + s * 32);
                _mm512_store_si512(b[0] + i * 32, _mm512_permutex2var_epi16(x, lo_idx, y));
                _mm512_store_si512(b[1] + i * 32, _mm512_permutex2var_epi16(x, hi_idx, y));
            }
            QF_TILE_MEMORY();
            _tile_loadd(4, b[0], 64);
            _tile_loadd(5, b[1], 64);
            float* half0 = sums + (2 * s) * 256;
            float* half1 = sums + (blocks16 + 2 * s) * 256;
            _tile_loadd(6, half0, 64);
            _tile_loadd(7, half0 + 256, 64);
            _tile_dpbf16ps(6, 0, 4);
            _tile_dpbf16ps(6, 1, 4);
            _tile_dpbf16ps(7, 0, 5);
            _tile_dpbf16ps(7, 1, 5);
            _tile_stored(6, half0, 64);
            _tile_stored(7, half0 + 256, 64);
            _tile_loadd(6, half1, 64);
            _tile_loadd(7, half1 + 256, 64);
            _tile_dpbf16ps(6, 2, 4);
            _tile_dpbf16ps(6, 3, 4);
            _tile_dpbf16ps(7, 2, 5);
            _tile_dpbf16ps(7, 3, 5);
            _tile_stored(6, half1, 64);
            _tile_stored(7, half1 + 256, 64);
            QF_TILE_MEMORY();
        }
    }
    const std::int64_t chunk = std::min(kChunk, p - t0);
    for (std::int64_t h = 0; h < 2; ++h)
        for (std::int64_t q = 0; q < blocks16; ++q)  // tile [chunk column 16 h + i][weight column c0 + 16 q + j]
            for (std::int64_t i = 0; i < 16 && h * 16 + i < chunk; ++i)
                for (std::int64_t j = 0; j < 16; ++j) c[(c0 + q * 16 + j) * p + t0 + h * 16 + i] = sums[(h * blocks16 + q) * 256 + i * 16 + j];
}

QF_AMX void release_tiles() { _tile_release(); }

bool cpu_has_amx() {
    unsigned int a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!((d >> 22) & 1) || !((d >> 24) & 1)) return false;  // AMX-BF16, AMX-TILE
    constexpr long kRequestPermission = 0x1023, kTileData = 18;  // ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA
    return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
}

#endif

}  // namespace

bool amx_usable() {
#ifdef QF_HAVE_AMX_CODE
    static const bool yes = [] {
        const char* env = std::getenv("QF_CPU_AMX");
        if (env && std::strcmp(env, "0") == 0) return false;
        return cpu_has_amx();
    }();
    return yes;
#else
    return false;
#endif
}

bool amx_fits(const TensorView& w) { return w.dtype == DType::BF16 && w.rows % 32 == 0 && w.cols % 32 == 0 && w.rows > 0 && w.cols > 0; }

#ifdef QF_HAVE_AMX_CODE

void gemm_nn_amx(const TensorView& w, const float* b, std::int64_t p, float* c) {
    const auto* data = reinterpret_cast<const std::uint16_t*>(w.data);
    for (std::int64_t t0 = 0; t0 < p; t0 += kChunk) {
        const std::vector<std::uint16_t> packed = pack(b, w.cols, p, t0, true);
        // Tasks of 64 rows (two blocks; the last may hold one), the tiles configured once per task.
        oneapi::tbb::parallel_for(std::int64_t{0}, (w.rows + 63) / 64, [&](std::int64_t t) {
            configure_tiles();
            for (std::int64_t r = t * 64; r < std::min(w.rows, (t + 1) * 64); r += 32) nn_rows(data, w.cols, packed.data(), r, c, p, t0);
            release_tiles();
        });
    }
}

void gemm_tn_amx(const TensorView& w, const float* b, std::int64_t p, float* c) {
    const auto* data = reinterpret_cast<const std::uint16_t*>(w.data);
    for (std::int64_t t0 = 0; t0 < p; t0 += kChunk) {
        const std::vector<std::uint16_t> packed = pack(b, w.rows, p, t0, false);
        oneapi::tbb::parallel_for(std::int64_t{0}, (w.cols + kBandCols - 1) / kBandCols, [&](std::int64_t t) {
            const std::int64_t c0 = t * kBandCols, width = std::min(kBandCols, w.cols - c0);
            std::vector<float> sums(static_cast<std::size_t>(2 * (width / 16) * 256));
            configure_tiles();
            tn_band(data, w.rows, w.cols, packed.data(), c0, width, sums.data(), c, p, t0);
            release_tiles();
        });
    }
}

#else  // no tiles in this build (amx_usable() is false): the float loops keep the contract

void gemm_nn_amx(const TensorView& w, const float* b, std::int64_t p, float* c) { gemm_nn(w, b, p, c); }
void gemm_tn_amx(const TensorView& w, const float* b, std::int64_t p, float* c) { gemm_tn(w, b, p, c); }

#endif

}  // namespace quantflow
