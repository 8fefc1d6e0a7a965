// kernels/random.hpp: seeded Gaussian draws that are the same on every machine and standard library.
//
// Every random quantity of a conversion (bias-correction means, SVD sketches, compare's test inputs) comes
// from a stream seeded by (run seed, what it is for), so results never depend on the order tensors are
// processed in or on the thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string_view>

namespace quantflow {

// splitmix64 finaliser: decorrelates nearby seeds.
inline std::uint64_t mix_seed(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// A stream seed for one named use ("blocks.0.attn.qkv.weight") of the run seed (FNV-1a of the name).
inline std::uint64_t named_seed(std::uint64_t seed, std::string_view name) {
    std::uint64_t h = 0xCBF29CE484222325ull;
    for (const char c : name) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001B3ull;
    return mix_seed(seed ^ mix_seed(h));
}

// out[i] = scale * N(0,1), Box-Muller on mt19937_64 words (written out, so every library draws the same).
inline void fill_normal(std::uint64_t stream_seed, double scale, std::span<float> out) {
    std::mt19937_64 rng(stream_seed);
    const auto uniform = [&] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };
    for (std::size_t i = 0; i < out.size(); i += 2) {
        const double r = std::sqrt(-2.0 * std::log(uniform())), theta = 2.0 * M_PI * uniform();
        out[i] = static_cast<float>(r * std::cos(theta) * scale);
        if (i + 1 < out.size()) out[i + 1] = static_cast<float>(r * std::sin(theta) * scale);
    }
}

// out[i] = +-1 with equal odds: bit i % 64 of mix_seed(stream_seed + i / 64), the randomized SVD's sketch. A
// Rademacher sketch finds the range as well as a Gaussian one (Halko, Martinsson & Tropp 2011, section 4.6), and
// with the power iterations the subspace is the same to float rounding; fill_normal's Box-Muller took 8 ms for a
// 5120 x 32 sketch (22 ms for 13824 x 32), 40% of the GPU's SVD of such a layer and 9% of the CPU's.
inline void fill_signs(std::uint64_t stream_seed, std::span<float> out) {
    for (std::size_t i = 0; i < out.size(); i += 64) {
        const std::uint64_t bits = mix_seed(stream_seed + i / 64);
        for (std::size_t j = 0; j < 64 && i + j < out.size(); ++j) out[i + j] = (bits >> j) & 1 ? 1.0f : -1.0f;
    }
}

}  // namespace quantflow
