// kernels/units.hpp: byte counts as people read them, shared by every layer's messages.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace quantflow {

// 512 -> "512 B", 268435456 -> "256 MiB", 1500000000 -> "1.40 GiB" (binary units, two decimals).
std::string format_size(std::uint64_t bytes);

// {10, 20} -> "[10, 20]", the way shapes appear in plans and messages.
std::string format_shape(const std::vector<std::int64_t>& shape);

}  // namespace quantflow
