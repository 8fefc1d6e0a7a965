#include "stages/filter.hpp"

#include <algorithm>
#include <cstdio>

namespace quantflow {
namespace {

// Seed thresholds of spec 4.3, kept as the reference wrote them.
constexpr double kMaxAspect = 4.0;
constexpr std::int64_t kWideMinDim = 5120;
constexpr std::int64_t kSmallElements = 15'000'000;
constexpr double kSmallMaxAspect = 2.0;
constexpr std::int64_t kMinLargestDim = 4096;

bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

std::string fixed2(double value) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", value);
    return buf;
}

TensorDecision keep(std::string reason) { return {Verdict::Keep, std::move(reason)}; }

// Step 1 runs for every key, so a T5 decoder's biases and norms leave with its weights.
std::optional<std::string> removal_reason(const FilterOptions& options, std::string_view name) {
    for (const auto& profile : options.profiles)
        for (const auto& part : profile.remove)
            if (contains(name, part)) return "removed by profile " + profile.name + ": '" + part + "'";
    return std::nullopt;
}

std::optional<std::string> profile_skip_reason(const FilterOptions& options, std::string_view name) {
    for (const auto& profile : options.profiles)
        for (const auto& part : profile.skip)
            if (contains(name, part)) return "profile " + profile.name + ": '" + part + "'";
    return std::nullopt;
}

}  // namespace

TensorDecision decide_tensor(const FilterOptions& options, std::string_view name, DType dtype,
                             std::span<const std::int64_t> shape) {
    if (auto reason = removal_reason(options, name)) return {Verdict::Remove, std::move(*reason)};
    if (!name.ends_with(".weight") || shape.size() != 2) return keep("not a 2-D .weight");
    if (auto reason = profile_skip_reason(options, name)) return keep(std::move(*reason));
    if (options.exclude && std::regex_search(name.begin(), name.end(), *options.exclude))
        return keep("--exclude-layers '" + options.exclude_text + "'");
    if (shape[0] == 0 || shape[1] == 0) return keep("empty tensor");
    if (!is_quantizable_float(dtype)) return keep("dtype " + std::string(dtype_name(dtype)) + " is not quantizable");
    if (options.heur) {
        if (auto reason = heuristic_skip_reason(shape[0], shape[1], options.block_size))
            return keep("--heur: " + *reason);
    }
    return {Verdict::Quantize, {}};
}

std::optional<std::string> heuristic_skip_reason(std::int64_t rows, std::int64_t cols, std::int64_t block_size) {
    const std::string bs = std::to_string(block_size);
    for (const std::int64_t dim : {rows, cols})
        if (dim < block_size) return "dimension " + std::to_string(dim) + " < block size " + bs;
    // A non-positive block size has no divisibility rule (and would make the modulo undefined).
    if (block_size > 0)
        for (const std::int64_t dim : {rows, cols})
            if (dim % block_size != 0) return std::to_string(dim) + " not divisible by block size " + bs;

    const std::int64_t lo = std::min(rows, cols);
    const std::int64_t hi = std::max(rows, cols);
    // The reference divides Python ints into a float: double reproduces its comparisons exactly.
    const double aspect = lo > 0 ? static_cast<double>(hi) / static_cast<double>(lo) : 0.0;
    if (aspect > kMaxAspect && lo < kWideMinDim)
        return "aspect " + fixed2(aspect) + " > 4 with min " + std::to_string(lo) + " < " + std::to_string(kWideMinDim);
    const std::int64_t elements = rows * cols;
    if (elements < kSmallElements && aspect < kSmallMaxAspect)
        return "M*N " + std::to_string(elements) + " < " + std::to_string(kSmallElements) + " with aspect " +
               fixed2(aspect) + " < 2";
    if (hi < kMinLargestDim) return "max(M,N) " + std::to_string(hi) + " < " + std::to_string(kMinLargestDim);
    return std::nullopt;
}

}  // namespace quantflow
