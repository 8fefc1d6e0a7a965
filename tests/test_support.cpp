#include "tests/test_support.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

#include "kernels/numerics.hpp"
#include "stages/format/mapped_file.hpp"
#include "stages/reader.hpp"

namespace qftest {
namespace fs = std::filesystem;

std::string temp_dir(std::string_view name) {
    const fs::path dir = fs::path(QF_TEST_TMP) / std::string(name);
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir.string();
}

void write_raw_file(const std::string& path, std::string_view header_json, const std::vector<std::byte>& data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    const std::uint64_t n = header_json.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(header_json.data(), static_cast<std::streamsize>(header_json.size()));
    out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    if (!out) throw std::runtime_error("cannot write " + path);
}

void write_safetensors(const std::string& path, const std::vector<RawTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
    std::string json = "{";
    if (!metadata.empty()) {
        json += "\"__metadata__\":{";
        bool first = true;
        for (const auto& [k, v] : metadata) {
            json += (first ? "\"" : ",\"") + k + "\":\"" + v + "\"";
            first = false;
        }
        json += "}";
    }
    std::vector<std::byte> data;
    for (const auto& t : tensors) {
        if (json.size() > 1) json += ",";
        json += "\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
        for (std::size_t i = 0; i < t.shape.size(); ++i) json += (i ? "," : "") + std::to_string(t.shape[i]);
        json += "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
                std::to_string(data.size() + t.data.size()) + "]}";
        data.insert(data.end(), t.data.begin(), t.data.end());
    }
    json += "}";
    while ((json.size() + 8) % 8 != 0) json += ' ';
    write_raw_file(path, json, data);
}

std::vector<std::byte> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> out(bytes.size());
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
}

std::vector<std::string> list_dir(const std::string& path) {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

bool file_exists(const std::string& path) { return fs::exists(path); }

namespace {
template <typename Encode>
std::vector<std::byte> random_values(std::size_t count, std::uint64_t seed, float scale, std::size_t width,
                                     Encode encode) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<std::byte> out(count * width);
    for (std::size_t i = 0; i < count; ++i) encode(normal(rng), out.data() + i * width);
    return out;
}
}  // namespace

std::vector<std::byte> random_bf16(std::size_t count, std::uint64_t seed, float scale) {
    return random_values(count, seed, scale, 2, [](float v, std::byte* p) {
        const std::uint16_t h = quantflow::f32_to_bf16(v);
        std::memcpy(p, &h, 2);
    });
}

std::vector<std::byte> random_f32(std::size_t count, std::uint64_t seed, float scale) {
    return random_values(count, seed, scale, 4, [](float v, std::byte* p) { std::memcpy(p, &v, 4); });
}

std::vector<std::byte> structured_bf16(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
    const std::int64_t rank = std::min<std::int64_t>(64, std::min(rows, cols));
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<double> a(static_cast<std::size_t>(rows * rank)), b(static_cast<std::size_t>(cols * rank));
    for (double& x : a) x = normal(rng) / std::sqrt(static_cast<double>(rows));
    for (double& x : b) x = normal(rng) / std::sqrt(static_cast<double>(cols));
    const double noise = 0.15 / std::sqrt(static_cast<double>(rows + cols)) * std::pow(static_cast<double>(rank), -0.8);
    std::vector<std::byte> out(static_cast<std::size_t>(rows * cols) * 2);
    for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t c = 0; c < cols; ++c) {
            double s = 0;
            for (std::int64_t i = 0; i < rank; ++i)
                s += std::pow(static_cast<double>(i + 1), -0.8) * a[static_cast<std::size_t>(r * rank + i)] * b[static_cast<std::size_t>(c * rank + i)];
            const double w = (s * (c % 97 == 5 ? 8.0 : 1.0) * 0.02 * 8) + noise * normal(rng);
            const std::uint16_t h = quantflow::f32_to_bf16(static_cast<float>(w));
            std::memcpy(out.data() + 2 * (r * cols + c), &h, 2);
        }
    return out;
}

double subspace_overlap(const std::vector<float>& x, const std::vector<float>& y, std::int64_t len, std::int64_t k, bool columns) {
    double s = 0;
    for (std::int64_t i = 0; i < k; ++i)
        for (std::int64_t j = 0; j < k; ++j) {
            double d = 0;
            for (std::int64_t t = 0; t < len; ++t)
                d += columns ? static_cast<double>(x[static_cast<std::size_t>(t * k + i)]) * y[static_cast<std::size_t>(t * k + j)]
                             : static_cast<double>(x[static_cast<std::size_t>(i * len + t)]) * y[static_cast<std::size_t>(j * len + t)];
            s += d * d;
        }
    return s / static_cast<double>(k);
}

int run_command(const std::string& command, std::string& output) {
    output.clear();
    FILE* pipe = popen((command + " 2>&1").c_str(), "r");
    if (!pipe) throw std::runtime_error("popen failed for " + command);
    char buffer[4096];
    std::size_t n;
    while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
    const int status = pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace qftest

namespace qftest {

LoadedFile load(const std::string& path) {
    LoadedFile f;
    f.header = quantflow::read_safetensors_header(path);
    const quantflow::MappedFile file(path);
    for (std::size_t i = 0; i < f.header.tensors.size(); ++i) {
        const auto bytes = quantflow::tensor_data(file, f.header, i);
        f.data[f.header.tensors[i].name].assign(bytes.begin(), bytes.end());
    }
    for (const auto& t : f.header.tensors) f.info[t.name] = &t;
    return f;
}

std::string comfy_json(const LoadedFile& f, const std::string& layer) {
    const auto& b = f.data.at(layer + ".comfy_quant");
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

}  // namespace qftest
