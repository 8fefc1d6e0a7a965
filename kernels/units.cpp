#include "kernels/units.hpp"

#include <cmath>
#include <cstdio>

namespace quantflow {

std::string format_size(std::uint64_t bytes) {
    constexpr const char* kNames[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) return std::to_string(bytes) + " B";
    int unit = 0;
    while (unit + 1 < 7 && bytes >= (1ull << (10 * (unit + 1)))) ++unit;
    const std::uint64_t scale = 1ull << (10 * unit);
    if (bytes % scale == 0) return std::to_string(bytes / scale) + " " + kNames[unit];
    double value = static_cast<double>(bytes) / static_cast<double>(scale);
    // 1023.999 MiB would print as "1024.00 MiB": move up a unit instead.
    if (std::round(value * 100.0) >= 1024.0 * 100.0 && unit + 1 < 7) {
        ++unit;
        value /= 1024.0;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f %s", value, kNames[unit]);
    return buf;
}

std::string format_shape(const std::vector<std::int64_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

}  // namespace quantflow
