// stages/format/json_text.hpp: the bits of JSON text quantflow writes by hand (headers, comfy_quant, plans).
#pragma once

#include <string>
#include <string_view>

namespace quantflow {

// A JSON string literal with quotes: escapes '"', '\\' and control characters; UTF-8 passes through.
std::string json_quote(std::string_view text);

// Python's str(float) / repr(float): shortest round-trip digits, exponent form below 1e-4 or from 1e16
// ("0.01", "1e-05", "100.0", "1e+16"). Used by the reference's output file names.
std::string python_float_str(double value);

// A JSON number with round-trip digits (python_float_str), or null for NaN and infinities.
std::string json_number(double value);

}  // namespace quantflow
